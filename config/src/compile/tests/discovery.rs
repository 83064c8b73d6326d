use super::error_of;

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
