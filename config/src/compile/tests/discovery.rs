use super::error_of;
use crate::compile_str;
use std::time::Duration;

#[test]
fn a_cluster_reads_its_endpoints_from_a_file_and_errors_point_into_it() {
    let dir = std::env::temp_dir().join(format!("ringway-discovery-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("endpoints")).unwrap();
    let config = dir.join("ringway.toml");
    let cluster = "[cluster.api]\ndiscovery = { file = \"endpoints/api.toml\" }\n";
    let write = |text: &str| std::fs::write(dir.join("endpoints/api.toml"), text).unwrap();

    write("endpoints = [\"127.0.0.1:8001\", { addr = \"127.0.0.2:8002\", weight = 3 }]\n");
    let s = crate::compile_file_text(&config, cluster).unwrap();
    let c = &s.clusters[0];
    assert_eq!(c.endpoints.len(), 2);
    assert_eq!(c.endpoints[1].weight, 3);
    assert_eq!(
        c.endpoints_file.as_deref(),
        Some(dir.join("endpoints/api.toml").as_path())
    );

    // Errors name the endpoints file, line and column.
    write("endpoints = [\n  \"127.0.0.1:8001\",\n  \"nope\",\n]\n");
    let err = crate::compile_file_text(&config, cluster)
        .unwrap_err()
        .to_string();
    assert!(err.contains("endpoints/api.toml:3:3:"), "{err}");
    write("endpoints = [\"127.0.0.1:8001\"]\nextra = 1\n");
    let err = crate::compile_file_text(&config, cluster)
        .unwrap_err()
        .to_string();
    assert!(err.contains("endpoints/api.toml:2:1:"), "{err}");
    write("endpoints = []\n");
    let err = crate::compile_file_text(&config, cluster)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lists no endpoint"), "{err}");
    std::fs::remove_file(dir.join("endpoints/api.toml")).unwrap();
    let err = crate::compile_file_text(&config, cluster)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ringway.toml:2:22: cannot read endpoints file"),
        "{err}"
    );

    // Either endpoints or discovery.
    let both = "[cluster.api]\nendpoints = [\"127.0.0.1:1\"]\ndiscovery = { file = \"x.toml\" }\n";
    assert!(error_of(both).contains("has both `endpoints` and `discovery`"));
    assert!(error_of("[cluster.api]\n").contains("needs at least one endpoint"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn endpoint_names_are_asked_of_dns_not_resolved_by_compile() {
    let s = compile_str(
        "t.toml",
        "[cluster.a]\nendpoints = [\"127.0.0.1:1\", { addr = \"api.internal:8080\", weight = 3 }, \"[::1]:2\"]\n",
    )
    .unwrap();
    let c = &s.clusters[0];
    // Literals are endpoints at once; the name waits for its answer.
    let hosts: Vec<&str> = c.endpoints.iter().map(|e| e.host.as_str()).collect();
    assert_eq!(hosts, ["127.0.0.1", "::1"]);
    assert_eq!(
        s.dns_queries().into_iter().collect::<Vec<_>>(),
        [crate::DnsQuery::Host("api.internal".into())]
    );
    let mut s = s;
    let changed = s.resolve(&|_| {
        Some(crate::DnsAnswer::Addresses(vec![
            "10.1.0.1".parse().unwrap(),
            "10.1.0.2".parse().unwrap(),
        ]))
    });
    assert!(changed);
    let got: Vec<(String, u32)> = s.clusters[0]
        .endpoints
        .iter()
        .map(|e| (e.addr.to_string(), e.weight))
        .collect();
    assert_eq!(
        got,
        [
            ("127.0.0.1:1".into(), 1),
            ("10.1.0.1:8080".into(), 3),
            ("10.1.0.2:8080".into(), 3),
            ("[::1]:2".into(), 1)
        ]
    );
    // A name that cannot be asked, or a missing port, is an error.
    for bad in [
        "api..internal:80",
        "api.internal",
        "api.internal:0",
        "[::1:80",
        "a b:80",
    ] {
        let e = error_of(&format!("[cluster.a]\nendpoints = [{bad:?}]\n"));
        assert!(e.starts_with("test.toml:2:14:"), "{bad}: {e}");
    }
}

#[test]
fn a_cluster_can_follow_an_srv_name() {
    let s = compile_str(
        "t.toml",
        "[cluster.a]\ndiscovery = { srv = \"_api._tcp.service.consul.\" }\n",
    )
    .unwrap();
    assert!(s.clusters[0].endpoints.is_empty());
    assert_eq!(
        s.clusters[0].source,
        crate::EndpointSource::Srv("_api._tcp.service.consul".into())
    );
    let e = error_of(
        "[cluster.a]\ndiscovery = { srv = \"_api._tcp.service.consul\", file = \"x.toml\" }\n",
    );
    assert!(
        e.starts_with("test.toml:2:13:") && e.contains("one of"),
        "{e}"
    );
    let e = error_of("[cluster.a]\ndiscovery = {}\n");
    assert!(e.starts_with("test.toml:2:13:"), "{e}");
    let e = error_of("[cluster.a]\ndiscovery = { srv = \"no such..name\" }\n");
    assert!(e.starts_with("test.toml:2:21:"), "{e}");
}

#[test]
fn runtime_dns_settings_are_checked() {
    let s = compile_str(
        "t.toml",
        "[runtime]\nresolvers = [\"127.0.0.1:5353\", \"::1\"]\ndns = { min_ttl = \"2s\", max_ttl = \"60s\", family = \"v4-preferred\" }\n",
    )
    .unwrap();
    let dns = &s.runtime.dns;
    assert_eq!(
        dns.resolvers,
        [
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert_eq!(dns.min_ttl, Duration::from_secs(2));
    assert_eq!(dns.max_ttl, Duration::from_secs(60));
    assert_eq!(dns.family, crate::AddressFamily::V4Preferred);
    assert_eq!(
        compile_str("t.toml", "").unwrap().runtime.dns,
        crate::DnsSettings::default()
    );
    let e = error_of("[runtime]\nresolvers = [\"dns.google\"]\n");
    assert!(e.starts_with("test.toml:2:14:"), "{e}");
    let e = error_of("[runtime]\nresolvers = []\n");
    assert!(e.starts_with("test.toml:2:13:"), "{e}");
    let e = error_of("[runtime]\ndns = { min_ttl = \"10s\", max_ttl = \"5s\" }\n");
    assert!(
        e.starts_with("test.toml:2:36:") && e.contains("shorter"),
        "{e}"
    );
    let e = error_of("[runtime]\ndns = { family = \"ipv4\" }\n");
    assert!(
        e.starts_with("test.toml:2:18:") && e.contains("\"v4\""),
        "{e}"
    );
}

#[test]
fn slow_start_is_for_the_balancers_that_can_ramp() {
    let s = compile_str(
        "t.toml",
        "[cluster.a]\nendpoints = [\"127.0.0.1:1\"]\nslow_start = \"30s\"\n",
    )
    .unwrap();
    assert_eq!(s.clusters[0].slow_start, Some(Duration::from_secs(30)));
    let e = error_of(
        "[cluster.a]\nendpoints = [\"127.0.0.1:1\"]\nbalancer = \"maglev\"\nslow_start = \"30s\"\n",
    );
    assert!(
        e.starts_with("test.toml:4:14:") && e.contains("hashing"),
        "{e}"
    );
}
