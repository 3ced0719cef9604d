//! The ClientHello parser on real, truncated, re-fragmented, oversized and random input.

use rand::{Rng, SeedableRng};

use super::{alpn_ext, hello_message, records, rustls_hello, sni_ext};
use crate::detect::client_hello::{parse, ClientHello, Outcome};

fn hello(sni: Option<&str>, alpn: Option<&[&str]>) -> Outcome {
    Outcome::Hello(ClientHello {
        server_name: sni.map(str::to_string),
        alpn: alpn.map(|a| a.iter().map(|p| p.to_string()).collect()),
    })
}

#[test]
fn rustls_hellos_give_sni_and_alpn() {
    let bytes = rustls_hello("a.example", &["h2", "http/1.1"]);
    assert_eq!(
        parse(&bytes),
        hello(Some("a.example"), Some(&["h2", "http/1.1"]))
    );
    // Istio's sidecars offer their own protocols first.
    let istio = ["istio-peer-exchange", "istio", "h2", "http/1.1"];
    let bytes = rustls_hello("outbound_.8080_._.web.default.svc.cluster.local", &istio);
    assert_eq!(
        parse(&bytes),
        hello(
            Some("outbound_.8080_._.web.default.svc.cluster.local"),
            Some(&istio)
        )
    );
    assert_eq!(
        parse(&rustls_hello("b.example", &[])),
        hello(Some("b.example"), None)
    );
}

#[test]
fn an_ip_address_name_sends_no_sni() {
    // Clients never put IP addresses in SNI (RFC 6066 §3).
    assert_eq!(
        parse(&rustls_hello("127.0.0.1", &["h2"])),
        hello(None, Some(&["h2"]))
    );
}

#[test]
fn every_truncation_of_a_hello_waits_for_more() {
    let bytes = rustls_hello("a.example", &["h2"]);
    for n in 0..bytes.len() {
        assert_eq!(
            parse(&bytes[..n]),
            Outcome::Incomplete,
            "{n} of {} bytes",
            bytes.len()
        );
    }
    // Bytes after the hello (early data, a second flight) do not matter.
    let mut longer = bytes.clone();
    longer.extend([23, 3, 3, 0, 1, 0]);
    assert_eq!(parse(&longer), hello(Some("a.example"), Some(&["h2"])));
}

#[test]
fn a_hello_split_across_records_is_reassembled() {
    let message = hello_message(&[sni_ext("Split.Example"), alpn_ext(&["h2", "http/1.1"])]);
    let want = hello(Some("split.example"), Some(&["h2", "http/1.1"]));
    for fragment in [1, 2, 3, 5, 17, 64, message.len()] {
        let bytes = records(&message, fragment);
        assert_eq!(parse(&bytes), want, "fragments of {fragment}");
        for n in 0..bytes.len() {
            assert_eq!(
                parse(&bytes[..n]),
                Outcome::Incomplete,
                "fragments of {fragment}, {n} bytes"
            );
        }
    }
}

#[test]
fn a_hello_without_extensions_is_tls_without_sni_or_alpn() {
    assert_eq!(
        parse(&records(&hello_message(&[]), 1000)),
        hello(None, None)
    );
}

#[test]
fn plaintext_is_settled_by_its_first_bytes() {
    for input in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"G",
        b"\x16\x01",
        b"SSH-2.0-x\r\n",
        b"\x00",
    ] {
        assert_eq!(parse(input), Outcome::NotTls, "{input:?}");
    }
}

#[test]
fn records_and_messages_that_cannot_be_a_client_hello_are_not_tls() {
    let good = hello_message(&[sni_ext("a.example")]);
    let mut server_hello = good.clone();
    server_hello[0] = 2;
    let mut alert_record = records(&good, 10);
    alert_record[15] = 21; // the second record claims to be an alert
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not a ClientHello", records(&server_hello, 1000)),
        ("alert between fragments", alert_record),
        ("zero-length record", vec![22, 3, 1, 0, 0]),
        ("record over 2^14 bytes", vec![22, 3, 1, 0x40, 0x01]),
        ("hello over 16 KiB", records(&[1, 0, 0x40, 0x01], 4)),
        ("SSLv3 only", {
            let mut m = hello_message(&[]);
            m[5] = 0; // legacy_version 3.0
            records(&m, 1000)
        }),
    ];
    for (what, bytes) in cases {
        assert_eq!(parse(&bytes), Outcome::NotTls, "{what}");
    }
}

#[test]
fn malformed_hellos_are_not_tls_but_bad_alpn_only_loses_alpn() {
    let sni = sni_ext("a.example");
    let bad_sni_type = (0u16, {
        let mut d = sni.1.clone();
        d[2] = 1;
        d
    });
    let nul_in_name = sni_ext("a\0.example");
    let trailing_sni = (0u16, {
        let mut d = sni.1.clone();
        d.push(0);
        d
    });
    for ext in [bad_sni_type, nul_in_name, trailing_sni, (0, vec![])] {
        let bytes = records(&hello_message(std::slice::from_ref(&ext)), 1000);
        assert_eq!(parse(&bytes), Outcome::NotTls, "server_name {:?}", ext.1);
    }
    let duplicate = records(&hello_message(&[sni.clone(), sni.clone()]), 1000);
    assert_eq!(parse(&duplicate), Outcome::NotTls, "duplicate extension");
    let only_tls13_draft = (43u16, vec![2, 0x7f, 0x17]);
    let bytes = records(&hello_message(&[only_tls13_draft]), 1000);
    assert_eq!(parse(&bytes), Outcome::NotTls, "no negotiable version");

    for bad_alpn in [
        vec![0, 0],
        vec![0, 3, 0, 1, b'x'],
        vec![0, 5, 2, b'h', b'2'],
    ] {
        let bytes = records(&hello_message(&[sni.clone(), (16, bad_alpn)]), 1000);
        assert_eq!(parse(&bytes), hello(Some("a.example"), None));
    }
}

#[test]
fn oversized_inner_lengths_are_not_tls() {
    let message = hello_message(&[sni_ext("a.example"), alpn_ext(&["h2"])]);
    // Every length field is two bytes or less past fixed offsets; inflating any byte of the
    // message must give a verdict, never a panic, and never a wrong SNI.
    for i in 4..message.len() {
        let mut m = message.clone();
        m[i] = 0xff;
        match parse(&records(&m, 1000)) {
            Outcome::Hello(h) => {
                assert!(
                    h.server_name.is_none_or(|s| s.chars().count() == 9),
                    "byte {i}"
                )
            }
            Outcome::NotTls | Outcome::Incomplete => {}
        }
    }
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for _ in 0..20_000 {
        let len = rng.random_range(0..300);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Half of them start like a handshake record so the parser gets past the first bytes.
        if rng.random_bool(0.5) && bytes.len() >= 5 {
            bytes[..3].copy_from_slice(&[22, 3, 1]);
        }
        let _ = parse(&bytes);
    }
    let real = rustls_hello("fuzz.example", &["h2", "http/1.1"]);
    for _ in 0..5_000 {
        let mut bytes = real.clone();
        for _ in 0..rng.random_range(1..8) {
            let i = rng.random_range(0..bytes.len());
            bytes[i] = rng.random();
        }
        let _ = parse(&bytes);
    }
}
