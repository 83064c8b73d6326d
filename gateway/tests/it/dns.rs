//! Endpoints that follow DNS, against a real DNS server (dnsmasq on a
//! loopback port) whose records change while `ringload` drives traffic;
//! origins on 127.0.0.2, 127.0.0.3, ... stand in for other hosts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ringload::{self, Origin};
use crate::support::*;

/// dnsmasq answering for `*.test` from a hosts file (re-read on SIGHUP)
/// and the SRV records it was started with; everything else under `.test`
/// is NXDOMAIN. Local records get a TTL of one second. Killed on drop.
struct Dns {
    child: Child,
    addr: std::net::SocketAddr,
    hosts: PathBuf,
    _dir: TempDir,
}

impl Dns {
    fn start(hosts: &str, srv: &[String]) -> Dns {
        let dir = TempDir::new();
        // A port free for both TCP and UDP (a client connection's local
        // port can hold the TCP side of one that UDP found free).
        let port = loop {
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = tcp.local_addr().unwrap().port();
            if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
                break port;
            }
        };
        let hosts_file = dir.path.join("hosts");
        std::fs::write(&hosts_file, hosts).unwrap();
        let dns = Dns::launch(port, &hosts_file, srv);
        Dns {
            child: dns,
            addr: ([127, 0, 0, 1], port).into(),
            hosts: hosts_file,
            _dir: dir,
        }
    }

    fn launch(port: u16, hosts: &Path, srv: &[String]) -> Child {
        let program = ["/usr/sbin/dnsmasq", "dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("dnsmasq");
        let mut command = Command::new(program);
        command
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--local=/test/",
                "--local-ttl=1",
                "--user=root",
                "--pid-file=",
                // stderr (discarded): there may be no syslog to log to.
                "--log-facility=-",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .args(srv.iter().map(|s| format!("--srv-host={s}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq-base)");
        // Up once it answers over TCP as well as UDP.
        assert!(
            wait_until(Duration::from_secs(5), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "dnsmasq did not start on port {port}"
        );
        child
    }

    /// Replaces the hosts file and has dnsmasq read it again.
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        // SAFETY: a signal to the child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
    }

    /// Stops the server (the port then refuses).
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A config whose one cluster is `cluster`, asking `dns`.
fn config(dns: &Dns, cluster: &str) -> String {
    format!(
        "[runtime]\nresolvers = [\"{}\"]\ndns = {{ min_ttl = \"1s\", max_ttl = \"5s\" }}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{EDGE}[[route]]\ncluster = \"api\"\n[cluster.api]\n{cluster}",
        dns.addr
    )
}

/// Two origins on the same port of two loopback addresses.
fn two_hosts() -> (Origin, Origin) {
    let a = Origin::start_on("a", "127.0.0.2:0", &[]);
    let b = Origin::start_on("b", &format!("127.0.0.3:{}", a.addr.port()), &[]);
    (a, b)
}

/// Waits up to `limit` for `origin` to answer more requests than `since`.
fn grows(origin: &Origin, since: u64, limit: Duration) -> bool {
    wait_until(limit, || origin.served() > since)
}

/// `api.test` at 127.0.0.2 (where `a` listens), a gateway (2 workers)
/// following it, and 9 s of ringload through it, once `a` serves.
fn serving_api_test(a: &Origin) -> (Dns, Binary, Child) {
    let dns = Dns::start("127.0.0.2 api.test\n", &[]);
    let endpoints = format!("endpoints = [\"api.test:{}\"]\n", a.addr.port());
    let gw = Binary::start(&config(&dns, &endpoints), &["--workers", "2"]);
    let load = ringload::run(
        &format!("http://{}/", gw.addr),
        &["-c", "4", "-d", "9s", "--timeout", "5s"],
    );
    assert!(grows(a, 0, Duration::from_secs(5)), "a never served");
    (dns, gw, load)
}

#[test]
fn changed_records_move_traffic_within_the_ttl_and_fail_no_request() {
    let (a, b) = two_hosts();
    let (dns, gw, load) = serving_api_test(&a);
    assert_eq!(b.served(), 0);

    // The name moves to b: within the TTL (1 s) + 1 s, b serves and a
    // gets nothing new.
    dns.set_hosts("127.0.0.3 api.test\n");
    let moved = Instant::now();
    assert!(grows(&b, 0, Duration::from_secs(5)), "b never served");
    let took = moved.elapsed();
    assert!(took <= Duration::from_secs(2), "moved after {took:?}");
    std::thread::sleep(Duration::from_millis(300)); // in-flight requests end
    let a_after = a.served();
    assert!(grows(&b, b.served(), Duration::from_secs(2)));
    assert!(grows(&b, b.served(), Duration::from_secs(2)));
    assert_eq!(a.served(), a_after, "a still served after the move");

    // Both addresses: both serve.
    dns.set_hosts("127.0.0.2 api.test\n127.0.0.3 api.test\n");
    assert!(
        grows(&a, a_after, Duration::from_secs(3)),
        "a did not come back"
    );
    let (_, clusters) = gw.admin("GET", "/clusters");
    assert!(
        clusters.contains("follows DNS api.test: 2 addresses"),
        "{clusters}"
    );
    assert!(gw.metric("ringway_discovery_updates_total{cluster=\"api\"}") >= 3);

    let report = ringload::report(load);
    assert_eq!(report["errors"]["total"], 0, "{report}");
    let requests = report["requests"].as_u64().unwrap();
    assert_eq!(report["status"]["200"].as_u64(), Some(requests), "{report}");
}

#[test]
fn srv_records_give_the_lowest_priority_group_its_ports_and_weights() {
    // a and b in the first group (weights 3 and 1), zero-weight z beside
    // them (nothing in a group that weighs more: no traffic), standby c
    // in a lower-priority group: no traffic.
    let origins: Vec<Origin> = ["a", "b", "c", "z"]
        .iter()
        .enumerate()
        .map(|(i, name)| Origin::start_on(name, &format!("127.0.0.{}:0", i + 2), &[]))
        .collect();
    let hosts: String = ["a", "b", "c", "z"]
        .iter()
        .enumerate()
        .map(|(i, name)| format!("127.0.0.{} {name}.test\n", i + 2))
        .collect();
    let port = |i: usize| origins[i].addr.port();
    let srv = vec![
        format!("_api._tcp.svc.test,a.test,{},10,3", port(0)),
        format!("_api._tcp.svc.test,b.test,{},10,1", port(1)),
        format!("_api._tcp.svc.test,c.test,{},20,5", port(2)),
        format!("_api._tcp.svc.test,z.test,{},10,0", port(3)),
    ];
    let dns = Dns::start(&hosts, &srv);
    let gw = Binary::start(
        &config(&dns, "discovery = { srv = \"_api._tcp.svc.test\" }\n"),
        &["--workers", "1"],
    );
    let report = ringload::report(ringload::run(
        &format!("http://{}/", gw.addr),
        &["-c", "4", "-n", "4000"],
    ));
    assert_eq!(report["errors"]["total"], 0, "{report}");
    let served: Vec<u64> = origins.iter().map(Origin::served).collect();
    assert_eq!((served[2], served[3]), (0, 0), "{served:?}");
    // Smooth weighted round-robin gives exactly 3:1 per worker; a few
    // percent of slack for the stats requests and the order of arrival.
    let share = served[0] as f64 / (served[0] + served[1]) as f64;
    assert!(
        (0.72..=0.78).contains(&share),
        "a's share {share}: {served:?}"
    );
    let (_, clusters) = gw.admin("GET", "/clusters");
    assert!(clusters.contains("a.test") || clusters.contains(&origins[0].addr.to_string()));
}

#[test]
fn a_stopped_dns_server_leaves_traffic_on_the_last_answer() {
    let (a, _b) = two_hosts();
    let (mut dns, gw, load) = serving_api_test(&a);
    dns.stop();
    // The TTL passes without a server (a question then fails after its
    // timeouts, 2 s over UDP and 2 s over TCP); the failure is counted and
    // the last answer keeps serving.
    assert!(
        wait_until(Duration::from_secs(10), || {
            gw.metric("ringway_discovery_failures_total{cluster=\"api\"}") >= 1
        }),
        "no failed question counted"
    );
    assert!(grows(&a, a.served(), Duration::from_secs(2)));
    let (_, clusters) = gw.admin("GET", "/clusters");
    assert!(clusters.contains("last error"), "{clusters}");
    assert!(clusters.contains("1 addresses"), "{clusters}");
    let report = ringload::report(load);
    assert_eq!(report["errors"]["total"], 0, "{report}");
}

#[test]
fn a_name_that_does_not_resolve_at_start_answers_503_until_it_does() {
    let a = Origin::start_on("a", "127.0.0.2:0", &[]);
    let dns = Dns::start("", &[]);
    let toml = config(
        &dns,
        &format!("endpoints = [\"late.test:{}\"]\n", a.addr.port()),
    );
    let gw = Binary::start(&toml, &["--workers", "2"]);
    // Up, and answering: 503, with the reason on /clusters.
    let r = get(gw.addr, "a", "/");
    assert_eq!(r.status, 503, "{}", r.text());
    let (_, clusters) = gw.admin("GET", "/clusters");
    assert!(
        clusters.contains("cluster api has no endpoint"),
        "{clusters}"
    );
    assert!(clusters.contains("late.test"), "{clusters}");

    // `ringway check` warns and still accepts it.
    let dir = TempDir::new();
    let file = dir.path.join("ringway.toml");
    std::fs::write(&file, &toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("warning: late.test"), "{stdout}");

    // The name appears: served within a few seconds, no reload.
    dns.set_hosts("127.0.0.2 late.test\n");
    assert!(
        wait_until(Duration::from_secs(5), || get(gw.addr, "a", "/").status
            == 200),
        "never served once the name resolved"
    );
    assert!(a.served() > 0);
}

/// A reload that is refused after its names were asked (a listener that
/// cannot bind) leaves the running configuration's names followed.
#[test]
fn a_refused_reload_keeps_the_running_names_followed() {
    let (a, b) = two_hosts();
    let dns = Dns::start("127.0.0.2 api.test\n", &[]);
    let endpoints = format!("endpoints = [\"api.test:{}\"]\n", a.addr.port());
    let gw = Binary::start(&config(&dns, &endpoints), &["--workers", "1"]);
    assert!(wait_until(Duration::from_secs(5), || get(
        gw.addr, "a", "/"
    )
    .status
        == 200));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = format!(
        "{}[[listener]]\nname = \"taken\"\nlisten = \"{}\"\n",
        config(&dns, "endpoints = [\"other.test:80\"]\n"),
        taken.local_addr().unwrap()
    );
    gw.write_config(&refused);
    let (status, body) = gw.admin("POST", "/reload");
    assert_ne!(status, 200, "{body}");
    // Still following api.test: a move to b is seen.
    dns.set_hosts("127.0.0.3 api.test\n");
    assert!(
        wait_until(Duration::from_secs(5), || {
            get(gw.addr, "a", "/").status == 200 && b.served() > 0
        }),
        "the move to b was not followed after the refused reload"
    );
    assert_eq!(get(gw.addr, "a", "/").status, 200);
}
