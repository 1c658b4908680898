//! Structured-format hot paths: one typical record per format.
//!
//! `cargo bench -p vigil-parsers --bench formats -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil_parsers::formats::kv::{self, KvOptions};
use vigil_parsers::formats::zeek::{ZeekLine, ZeekReader};
use vigil_parsers::formats::{cef, csv, json, leef};

const CEF: &str = "CEF:0|Palo Alto Networks|PAN-OS|10.1.0|TRAFFIC|end|3|rt=Mar 10 2024 08:15:30 GMT \
src=10.1.2.3 dst=203.0.113.7 spt=51514 dpt=443 proto=tcp act=allow cs1Label=Rule cs1=Trusted-to-Untrusted \
cs4Label=Src Zone cs4=trust suser=alice msg=session end reason aged-out";

const LEEF: &str = "LEEF:2.0|Lancope|StealthWatch|1.0|41|^|src=192.0.2.10^dst=172.50.123.1^sev=5^\
cat=anomaly^srcPort=81^dstPort=21^usrName=joe.black^devTime=Mar 10 2024 08:15:30.123 UTC^\
devTimeFormat=MMM dd yyyy HH:mm:ss.SSS zzz^proto=TCP^identSrc=10.0.0.1";

const KV: &str = "date=2024-03-10 time=08:15:30 devname=\"FGT-HQ-01\" devid=\"FG100FTK19000000\" \
eventtime=1710058530123456789 tz=\"+0100\" logid=\"0000000013\" type=\"traffic\" subtype=\"forward\" \
level=\"notice\" vd=\"root\" srcip=10.1.2.3 srcport=51514 srcintf=\"port1\" srcintfrole=\"lan\" \
dstip=203.0.113.7 dstport=443 dstintf=\"wan1\" dstintfrole=\"wan\" sessionid=123456789 proto=6 \
action=\"accept\" policyid=12 policytype=\"policy\" service=\"HTTPS\" dstcountry=\"Netherlands\" \
trandisp=\"snat\" duration=12 sentbyte=5321 rcvdbyte=48211 sentpkt=21 rcvdpkt=42 appcat=\"unscanned\"";

const JSON: &str = r#"{"timestamp":"2024-03-10T08:15:30.123Z","request_id":"9f1c2b7e-5d2a-4c1f-9a77-3b1e0c2d4f11","client":{"ip":"203.0.113.7","port":51514,"user_agent":"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/124.0"},"request":{"method":"POST","host":"api.example.com","path":"/v1/orders","query":"page=2&limit=50","protocol":"HTTP/2","bytes":1834},"response":{"status":201,"bytes":512,"latency_ms":37.5},"upstream":{"service":"orders","addr":"10.0.3.14:8080"},"auth":{"subject":"user-4821","scopes":["orders:write","orders:read"]},"tls":true,"cache":null}"#;

const ZEEK_HEADER: &[&str] = &[
    r"#separator \x09",
    "#set_separator\t,",
    "#empty_field\t(empty)",
    "#unset_field\t-",
    "#path\tconn",
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\t\
orig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\t\
orig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents",
];
const ZEEK_CONN: &str = "1710058530.123456\tCHhAvVGS1DHFjwGM9\t10.1.2.3\t51514\t203.0.113.7\t443\t\
tcp\tssl\t12.345678\t5321\t48211\tSF\tT\tF\t0\tShADadFf\t21\t6413\t42\t49895\t(empty)";

/// A Palo Alto PAN-OS 10 TRAFFIC line (~100 columns).
fn palo_alto_traffic() -> String {
    let mut cols: Vec<String> = vec![
        "1".into(),
        "2024/03/10 08:15:30".into(),
        "012801000000".into(),
        "TRAFFIC".into(),
        "end".into(),
        "2561".into(),
        "2024/03/10 08:15:30".into(),
        "10.1.2.3".into(),
        "203.0.113.7".into(),
        "198.51.100.1".into(),
        "203.0.113.7".into(),
        "Trusted-to-Untrusted".into(),
        "example\\alice".into(),
        "".into(),
        "ssl".into(),
        "vsys1".into(),
        "trust".into(),
        "untrust".into(),
        "ethernet1/2".into(),
        "ethernet1/1".into(),
        "Log_Profile".into(),
        "2024/03/10 08:15:30".into(),
        "123456".into(),
        "1".into(),
        "51514".into(),
        "443".into(),
        "40112".into(),
        "443".into(),
        "0x400064".into(),
        "tcp".into(),
        "allow".into(),
        "53532".into(),
        "5321".into(),
        "48211".into(),
        "63".into(),
        "2024/03/10 08:15:18".into(),
        "12".into(),
        "\"computer-and-internet-info,low-risk\"".into(),
        "0".into(),
        "7212345678".into(),
        "0x8000000000000000".into(),
        "10.0.0.0-10.255.255.255".into(),
        "Netherlands".into(),
        "0".into(),
        "21".into(),
        "42".into(),
        "tcp-fin".into(),
    ];
    while cols.len() < 100 {
        cols.push(if cols.len().is_multiple_of(3) {
            String::new()
        } else {
            format!("f{}", cols.len())
        });
    }
    cols.join(",")
}

fn formats(c: &mut Criterion) {
    let palo = palo_alto_traffic();
    let mut zeek = ZeekReader::new();
    for line in ZEEK_HEADER {
        zeek.line(line).unwrap();
    }
    assert!(matches!(zeek.line(ZEEK_CONN).unwrap(), ZeekLine::Record(_)));
    assert_eq!(csv::split(&palo, ',').unwrap().len(), 100);

    let mut group = c.benchmark_group("formats");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("cef_{}b", CEF.len()), |b| {
        b.iter(|| cef::parse(black_box(CEF)).unwrap())
    });
    group.bench_function(format!("cef_find_labelled_{}b", CEF.len()), |b| {
        b.iter(|| {
            let at = cef::find(black_box(CEF)).unwrap();
            cef::parse(&CEF[at..]).unwrap().labelled()
        })
    });
    group.bench_function(format!("leef_{}b", LEEF.len()), |b| {
        b.iter(|| leef::parse(black_box(LEEF)).unwrap())
    });
    group.bench_function("leef_time", |b| {
        b.iter(|| {
            leef::leef_time(
                black_box("Mar 10 2024 08:15:30.123 UTC"),
                Some("MMM dd yyyy HH:mm:ss.SSS zzz"),
            )
            .unwrap()
        })
    });
    let options = KvOptions::default();
    group.bench_function(format!("kv_fortigate_{}b", KV.len()), |b| {
        b.iter(|| kv::parse(black_box(KV), &options))
    });
    group.bench_function(format!("json_{}b", JSON.len()), |b| {
        b.iter(|| json::flatten(black_box(JSON), 1024, 16).unwrap())
    });
    group.bench_function(format!("csv_palo_alto_{}b", palo.len()), |b| {
        b.iter(|| csv::split(black_box(&palo), ',').unwrap())
    });
    group.bench_function(format!("zeek_conn_{}b", ZEEK_CONN.len()), |b| {
        b.iter(|| zeek.line(black_box(ZEEK_CONN)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, formats);
criterion_main!(benches);
