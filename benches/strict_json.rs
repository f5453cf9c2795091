//! Cost of strict JSON parsing (duplicate member names refused, see
//! `src/strict_json.rs`) against plain `serde_json::from_slice`, for the
//! documents a fetch validates: a ~600 B RFC 8414 document (the test
//! suite's), a 4 KiB real-world-sized one and a 64 KiB one. Every fetch
//! (refresh, cold miss, restore) parses once, so the difference is a
//! per-fetch cost, never a per-request one. Results: benches/README.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use oauth_metadata_gateway::strict_json;

fn document(padding_members: usize) -> Vec<u8> {
    let issuer = "https://auth.example.com";
    let mut doc = format!(
        r#"{{"issuer":"{issuer}","authorization_endpoint":"{issuer}/oauth/authorize","token_endpoint":"{issuer}/oauth/token","registration_endpoint":"{issuer}/oauth/register","scopes_supported":["user:read","entries:read"],"response_types_supported":["code"],"response_modes_supported":["query"],"grant_types_supported":["authorization_code","refresh_token"],"token_endpoint_auth_methods_supported":["client_secret_basic","client_secret_post","none"],"revocation_endpoint":"{issuer}/oauth/token","code_challenge_methods_supported":["plain","S256"]"#
    );
    for i in 0..padding_members {
        doc.push_str(&format!(
            r#","x_extension_{i}":{{"endpoint":"{issuer}/ext/{i}","values":["a","b","c"],"enabled":true}}"#
        ));
    }
    doc.push('}');
    doc.into_bytes()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, doc) in [
        ("600B", document(0)),
        ("4KiB", document(40)),
        ("64KiB", document(720)),
    ] {
        group.throughput(Throughput::Bytes(doc.len() as u64));
        group.bench_with_input(BenchmarkId::new("serde_json", name), &doc, |b, doc| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(doc)).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("strict", name), &doc, |b, doc| {
            b.iter(|| strict_json::parse(black_box(doc)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
