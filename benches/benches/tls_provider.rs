//! rustls with the `ring` provider (what ringway ships) against
//! `aws-lc-rs`: full handshakes and bulk record protection, in memory (a
//! rustls client and server talking through byte buffers, no sockets), so
//! only the crypto and rustls's own work is counted.
//!
//! - `handshake_server/PROVIDER/CASE`: the server side of one full
//!   handshake (`ServerConnection::new`, reading the ClientHello, key
//!   exchange, ECDSA P-256 signature, Finished, the two TLS 1.3 session
//!   tickets ringway sends), timed alone: 1 / time = handshakes per second
//!   per core. The client's work (key share, verifying the chain and the
//!   signature) is done but not timed. No resumption.
//! - `handshake_pair/...`: client and server together, for reference.
//!
//! Handshake cases: TLS 1.3 with AES-128-GCM/SHA-256 and X25519, P-256 or
//! (aws-lc-rs only; ring has no ML-KEM) X25519MLKEM768; TLS 1.3 with
//! AES-256-GCM/SHA-384 (what OpenSSL clients ask for first); TLS 1.2 with
//! ECDHE-ECDSA-AES128-GCM-SHA256 over X25519.
//! - `seal/PROVIDER/SUITE/SIZE` and `open/...`: the server encrypting
//!   SIZE-byte application writes into TLS 1.3 records (`writer().write` +
//!   `write_tls`), and the client decrypting them (`read_tls` +
//!   `process_new_packets` + `reader().read`), 256 KiB per iteration;
//!   criterion reports bytes per second.
//!
//! The certificate is ECDSA P-256 (made here with rcgen), the server keeps
//! a ticketer of its provider as ringway does, and the key exchange group
//! is set on both sides so that both providers do the same work.
//!
//! Run: `cargo bench -p ringway-benches --bench tls_provider`

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
    SupportedCipherSuite,
};

/// A CA and a `localhost` leaf, both ECDSA P-256.
struct Pki {
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    key: Vec<u8>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "bench CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("leaf params")
        .signed_by(&key, &issuer)
        .expect("leaf cert");
    Pki {
        ca: ca.der().clone(),
        leaf: leaf.der().clone(),
        key: key.serialize_der(),
    }
}

#[derive(Clone, Copy)]
enum Provider {
    Ring,
    AwsLc,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Ring => "ring",
            Provider::AwsLc => "aws-lc-rs",
        }
    }

    fn base(self) -> CryptoProvider {
        match self {
            Provider::Ring => rustls::crypto::ring::default_provider(),
            Provider::AwsLc => rustls::crypto::aws_lc_rs::default_provider(),
        }
    }

    fn ticketer(self) -> Arc<dyn rustls::server::ProducesTickets> {
        match self {
            Provider::Ring => rustls::crypto::ring::Ticketer::new(),
            Provider::AwsLc => rustls::crypto::aws_lc_rs::Ticketer::new(),
        }
        .expect("ticketer")
    }

    fn suite(self, name: &str) -> SupportedCipherSuite {
        self.base()
            .cipher_suites
            .into_iter()
            .find(|s| format!("{:?}", s.suite()) == name)
            .unwrap_or_else(|| panic!("{} has no {name}", self.name()))
    }

    fn group(self, name: &str) -> Option<&'static dyn SupportedKxGroup> {
        self.base()
            .kx_groups
            .into_iter()
            .find(|g| format!("{:?}", g.name()) == name)
    }
}

/// What one benchmark negotiates.
struct Case {
    label: &'static str,
    tls12: bool,
    suite: &'static str,
    group: &'static str,
}

const HANDSHAKES: [Case; 5] = [
    Case {
        label: "tls13_x25519",
        tls12: false,
        suite: "TLS13_AES_128_GCM_SHA256",
        group: "X25519",
    },
    // What OpenSSL clients (curl, wrk) negotiate: their first choice, which
    // rustls honours; its key schedule runs on SHA-384.
    Case {
        label: "tls13_x25519_aes256",
        tls12: false,
        suite: "TLS13_AES_256_GCM_SHA384",
        group: "X25519",
    },
    Case {
        label: "tls13_p256",
        tls12: false,
        suite: "TLS13_AES_128_GCM_SHA256",
        group: "secp256r1",
    },
    Case {
        label: "tls13_x25519mlkem768",
        tls12: false,
        suite: "TLS13_AES_128_GCM_SHA256",
        group: "X25519MLKEM768",
    },
    Case {
        label: "tls12_x25519",
        tls12: true,
        suite: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        group: "X25519",
    },
];

const SUITES: [&str; 3] = [
    "TLS13_AES_128_GCM_SHA256",
    "TLS13_AES_256_GCM_SHA384",
    "TLS13_CHACHA20_POLY1305_SHA256",
];

/// Client and server configurations for `case`, or `None` when the
/// provider lacks its key exchange group (ring has no ML-KEM).
fn configs(p: Provider, pki: &Pki, case: &Case) -> Option<(Arc<ClientConfig>, Arc<ServerConfig>)> {
    let provider = Arc::new(CryptoProvider {
        cipher_suites: vec![p.suite(case.suite)],
        kx_groups: vec![p.group(case.group)?],
        ..p.base()
    });
    let versions: &[&rustls::SupportedProtocolVersion] = if case.tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("server versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.leaf.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key.clone())),
        )
        .expect("server certificate");
    server.ticketer = p.ticketer();
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.clone()).expect("CA");
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("client versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    Some((Arc::new(client), Arc::new(server)))
}

/// Moves everything `from` has to send into `to`, and lets `to` process
/// it.
fn pump(from: &mut Connection, to: &mut Connection, buf: &mut Vec<u8>) {
    buf.clear();
    while from.wants_write() {
        from.write_tls(buf).expect("write_tls");
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).expect("read_tls");
        to.process_new_packets().expect("process_new_packets");
    }
}

/// One full handshake, client and server, to the end of the server's
/// session tickets.
fn handshake(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
    buf: &mut Vec<u8>,
) -> (Connection, Connection) {
    let name = ServerName::try_from("localhost").expect("name");
    let mut c: Connection = ClientConnection::new(client.clone(), name)
        .expect("client")
        .into();
    let mut s: Connection = ServerConnection::new(server.clone())
        .expect("server")
        .into();
    while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
        pump(&mut c, &mut s, buf);
        pump(&mut s, &mut c, buf);
    }
    (c, s)
}

/// One full handshake like `handshake`, returning only the time spent in
/// the server's calls (the client's are not timed).
fn handshake_server_only(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
    buf: &mut Vec<u8>,
) -> Duration {
    let name = ServerName::try_from("localhost").expect("name");
    let mut c: Connection = ClientConnection::new(client.clone(), name)
        .expect("client")
        .into();
    let t = Instant::now();
    let mut s: Connection = ServerConnection::new(server.clone())
        .expect("server")
        .into();
    let mut in_server = t.elapsed();
    loop {
        // Client to server: the client's writing is not timed.
        buf.clear();
        while c.wants_write() {
            c.write_tls(buf).expect("client write_tls");
        }
        let t = Instant::now();
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).expect("server read_tls");
            s.process_new_packets().expect("server process");
        }
        // Server to client: the server's writing is timed.
        buf.clear();
        while s.wants_write() {
            s.write_tls(buf).expect("server write_tls");
        }
        in_server += t.elapsed();
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).expect("client read_tls");
            c.process_new_packets().expect("client process");
        }
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
            break;
        }
    }
    in_server
}

fn handshakes(cr: &mut Criterion) {
    let pki = pki();
    let mut buf = Vec::with_capacity(16 << 10);
    let mut g = cr.benchmark_group("handshake_server");
    g.throughput(Throughput::Elements(1));
    for case in &HANDSHAKES {
        for p in [Provider::Ring, Provider::AwsLc] {
            let Some((client, server)) = configs(p, &pki, case) else {
                continue;
            };
            g.bench_function(format!("{}/{}", p.name(), case.label), |b| {
                b.iter_custom(|n| {
                    (0..n)
                        .map(|_| handshake_server_only(&client, &server, &mut buf))
                        .sum()
                })
            });
        }
    }
    g.finish();
    let mut g = cr.benchmark_group("handshake_pair");
    g.throughput(Throughput::Elements(1));
    for case in &HANDSHAKES[..3] {
        for p in [Provider::Ring, Provider::AwsLc] {
            let Some((client, server)) = configs(p, &pki, case) else {
                continue;
            };
            g.bench_function(format!("{}/{}", p.name(), case.label), |b| {
                b.iter(|| black_box(handshake(&client, &server, &mut buf)))
            });
        }
    }
    g.finish();
}

/// Plaintext per iteration of the bulk benchmarks.
const BULK: usize = 256 << 10;

fn bulk(cr: &mut Criterion) {
    let pki = pki();
    let plain = vec![0x5au8; BULK];
    for (dir, size) in [
        ("seal", 16384usize),
        ("seal", 1024),
        ("open", 16384),
        ("open", 1024),
    ] {
        let mut g = cr.benchmark_group(dir);
        g.throughput(Throughput::Bytes(BULK as u64));
        for suite in SUITES {
            for p in [Provider::Ring, Provider::AwsLc] {
                let case = Case {
                    label: "",
                    tls12: false,
                    suite,
                    group: "X25519",
                };
                let (client, server) = configs(p, &pki, &case).expect("configs");
                let mut buf = Vec::with_capacity(BULK + BULK / 8);
                let (mut c, mut s) = handshake(&client, &server, &mut buf);
                let short = suite
                    .trim_start_matches("TLS13_")
                    .trim_end_matches("_SHA256");
                let short = short.trim_end_matches("_SHA384");
                let mut out = vec![0u8; size];
                g.bench_function(format!("{}/{short}/{size}", p.name()), |b| {
                    b.iter_custom(|n| {
                        let mut timed = Duration::ZERO;
                        for _ in 0..n {
                            // Seal: the server encrypts BULK bytes in writes of `size`.
                            let t = Instant::now();
                            buf.clear();
                            for chunk in plain.chunks(size) {
                                let w = s.writer().write(chunk).expect("write");
                                assert_eq!(w, chunk.len());
                                while s.wants_write() {
                                    s.write_tls(&mut buf).expect("write_tls");
                                }
                            }
                            if dir == "seal" {
                                timed += t.elapsed();
                            }
                            // Open: the client decrypts them.
                            let t = Instant::now();
                            let mut rd = &buf[..];
                            let mut got = 0;
                            while !rd.is_empty() {
                                c.read_tls(&mut rd).expect("read_tls");
                                let state = c.process_new_packets().expect("process");
                                let mut left = state.plaintext_bytes_to_read();
                                while left > 0 {
                                    let k = left.min(out.len());
                                    c.reader().read_exact(&mut out[..k]).expect("read");
                                    left -= k;
                                    got += k;
                                }
                            }
                            if dir == "open" {
                                timed += t.elapsed();
                            }
                            assert_eq!(got, BULK);
                            black_box(&out);
                        }
                        timed
                    })
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, handshakes, bulk);
criterion_main!(benches);
