use super::error_of;
use crate::{HealthKind, compile_str};

/// A cluster `a` whose `health = { ... }` is `health` (line 3).
fn with_health(health: &str) -> String {
    format!("[cluster.a]\nendpoints = [\"127.0.0.1:1\"]\nhealth = {{ {health} }}\n")
}

#[test]
fn the_three_kinds_compile_with_their_own_keys() {
    let check = |health: &str| {
        compile_str("t.toml", &with_health(health))
            .unwrap()
            .clusters[0]
            .health
            .clone()
            .unwrap()
    };
    let http = check("path = \"/healthz\", host = \"api.test:8443\"");
    assert_eq!(
        http.kind,
        HealthKind::Http {
            path: "/healthz".to_owned()
        }
    );
    assert_eq!(http.host.as_deref(), Some("api.test:8443"));
    let tcp = check("kind = \"tcp\", interval = \"2s\"");
    assert_eq!(tcp.kind, HealthKind::Tcp);
    assert_eq!(tcp.host, None);
    assert_eq!(tcp.interval, std::time::Duration::from_secs(2));
    assert_eq!(
        check("kind = \"grpc\", service = \"shop.Cart\"").kind,
        HealthKind::Grpc {
            service: "shop.Cart".to_owned()
        }
    );
    assert_eq!(
        check("kind = \"grpc\"").kind,
        HealthKind::Grpc {
            service: String::new()
        }
    );
}

/// Each refused `health = { ... }` (on line 3, the table at column 10),
/// the column its error points at, and words of the message.
const REFUSED: &[(&str, u32, &str)] = &[
    // An http check without a path: at the table.
    ("interval = \"1s\"", 10, "needs a `path`"),
    ("kind = \"http\", timeout = \"1s\"", 10, "needs a `path`"),
    // Keys a kind does not use: where they are written.
    ("kind = \"tcp\", path = \"/h\"", 33, "`path` is not used"),
    ("kind = \"grpc\", path = \"/h\"", 34, "`path` is not used"),
    (
        "path = \"/h\", service = \"x\"",
        35,
        "`service` is not used",
    ),
    (
        "kind = \"tcp\", service = \"x\"",
        36,
        "`service` is not used",
    ),
    // No Host on a bare connection.
    ("kind = \"tcp\", host = \"x\"", 33, "`host` is not used"),
    // Bad values.
    ("kind = \"udp\"", 19, "\"http\", \"tcp\" or \"grpc\""),
    ("path = \"healthz\"", 19, "starting with `/`"),
    ("path = \"/h\", host = \"a b\"", 32, "host name"),
    ("path = \"/h\", host = \"\"", 32, "host name"),
];

#[test]
fn bad_health_checks_are_refused_where_they_are_written() {
    for (health, column, says) in REFUSED {
        let e = error_of(&with_health(health));
        assert!(
            e.starts_with(&format!("test.toml:3:{column}:")) && e.contains(says),
            "{health}: {e}"
        );
    }
}
