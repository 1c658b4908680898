//! HTTP push (`POST /api/v1/ingest`): API gateways and log shippers that speak HTTP (Kong's
//! http-log plugin, Fluent Bit, Vector) send one record per line; each line becomes a record on
//! the bus, with the sender as its source. The route itself lives in `api/`; this module only
//! turns a body into records.

use std::net::IpAddr;

use chrono::Utc;

use crate::bus::RawRecord;

/// The records of one pushed body: one per non-empty line (a trailing `\r` removed). A line
/// longer than `max_message_bytes` is refused with its first bytes kept (reason
/// `frame_too_long`), like a syslog frame.
pub fn records_from_body(
    body: &[u8],
    peer: Option<IpAddr>,
    max_message_bytes: usize,
) -> Vec<RawRecord> {
    let observer_id = match peer {
        Some(ip) => vigil_parsers::Text::from(format!("http/{ip}")),
        None => vigil_parsers::Text::const_new("http"),
    };
    let received_at = Utc::now();
    body.split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(|line| {
            let too_long = line.len() > max_message_bytes;
            RawRecord {
                bytes: line.get(..max_message_bytes.min(line.len())).unwrap_or_default().to_vec(),
                observer_type: "http",
                observer_id: observer_id.clone(),
                peer,
                received_at,
                refused: too_long.then(|| {
                    (
                        "frame_too_long",
                        format!(
                            "pushed line of {} bytes is longer than max_message_bytes {max_message_bytes}; first bytes kept",
                            line.len()
                        ),
                    )
                }),
                decoded: None,
                ack: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_is_a_record_and_long_ones_are_refused() {
        let body = b"{\"a\":1}\r\n\n   \n{\"b\":2}\nxxxxxxxxxxxxxxxxxxxx";
        let recs = records_from_body(body, "192.0.2.1".parse().ok(), 10);
        let lines: Vec<&[u8]> = recs.iter().map(|r| r.bytes.as_slice()).collect();
        assert_eq!(lines, [&b"{\"a\":1}"[..], b"{\"b\":2}", b"xxxxxxxxxx"]);
        assert!(recs.iter().all(|r| r.observer_id == "http/192.0.2.1"));
        assert_eq!(
            recs[2].refused.as_ref().map(|r| r.0),
            Some("frame_too_long")
        );
    }
}
