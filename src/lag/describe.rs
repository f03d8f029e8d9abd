//! The `lag` command: a group's per-partition lag and owners, like `kafka-consumer-groups
//! --describe`, for an operator at a terminal.
//!
//! Invariant: it reads, never joins: the client carries the group id only to fetch the group's
//! committed offsets and member list, so running it never triggers a rebalance.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use tracing::warn;

use crate::config::LagCommandConfig;
use crate::error::Error;
use crate::lag::{GroupLag, measure, reader};

/// The member that owns a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
}

/// The group's lag and, where the broker can describe the group, who owns each partition.
pub fn describe(cfg: &LagCommandConfig) -> Result<(GroupLag, HashMap<i32, Owner>), Error> {
    let consumer = reader(&cfg.kafka.brokers, &cfg.kafka.properties, &cfg.group_id)?;
    let timeout = Duration::from_secs(10);
    let reset = cfg.auto_offset_reset;
    let lag = measure(&consumer, &cfg.group_id, &cfg.topic, reset, timeout)?;
    let mut owners = HashMap::new();
    // Not every Kafka-compatible broker answers DescribeGroups; the lag is shown without owners.
    let groups = match consumer.fetch_group_list(Some(&cfg.group_id), timeout) {
        Ok(groups) => groups,
        Err(e) => {
            warn!(error = %e, "the broker did not describe the group; owners are not shown");
            return Ok((lag, owners));
        }
    };
    for group in groups.groups() {
        for m in group.members() {
            let owned = m
                .assignment()
                .map(|a| assigned(a, &cfg.topic))
                .unwrap_or_default();
            for p in owned {
                let owner = Owner {
                    member_id: m.id().to_owned(),
                    client_id: m.client_id().to_owned(),
                    host: m.client_host().to_owned(),
                };
                owners.insert(p, owner);
            }
        }
    }
    Ok((lag, owners))
}

pub fn print_table(lag: &GroupLag, owners: &HashMap<i32, Owner>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<20} {:>9} {:>14} {:>14} {:>10}  {:<40} {:<20} CLIENT-ID",
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST"
    );
    for p in &lag.partitions {
        let committed = p
            .committed
            .map_or_else(|| "-".to_owned(), |c| c.to_string());
        let (id, host, client) = owners.get(&p.partition).map_or(("-", "-", "-"), |o| {
            (o.member_id.as_str(), o.host.as_str(), o.client_id.as_str())
        });
        let _ = writeln!(
            out,
            "{:<24} {:<20} {:>9} {:>14} {:>14} {:>10}  {:<40} {:<20} {client}",
            lag.group, lag.topic, p.partition, committed, p.end, p.lag, id, host
        );
    }
    let _ = write!(out, "total lag: {}", lag.total());
    out
}

/// Partitions of `topic` in a consumer-protocol Assignment: version (i16), then
/// [topic (i16 length + bytes), partitions (i32 count + i32 each)], then user data (ignored).
/// Any malformed input yields what was read so far: the column then shows "-".
fn assigned(bytes: &[u8], topic: &str) -> Vec<i32> {
    let mut r = Reader(bytes);
    let mut out = Vec::new();
    let (Some(_version), Some(topics)) = (r.i16(), r.i32()) else {
        return out;
    };
    for _ in 0..topics.max(0) {
        let Some(name) = r.i16().and_then(|n| r.take(n.max(0) as usize)) else {
            break;
        };
        let Some(count) = r.i32() else {
            break;
        };
        let partitions: Vec<i32> = (0..count.max(0)).map_while(|_| r.i32()).collect();
        if name == topic.as_bytes() {
            out.extend(partitions);
        }
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = 1i16.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (name, parts) in topics {
            b.extend((name.len() as i16).to_be_bytes());
            b.extend(name.as_bytes());
            b.extend((parts.len() as i32).to_be_bytes());
            parts.iter().for_each(|p| b.extend(p.to_be_bytes()));
        }
        b.extend((-1i32).to_be_bytes());
        b
    }

    #[test]
    fn an_assignment_yields_the_partitions_of_the_topic() {
        let bytes = assignment(&[("other", &[0, 1]), ("orders", &[2, 5])]);
        assert_eq!(assigned(&bytes, "orders"), vec![2, 5]);
        assert!(assigned(&bytes, "missing").is_empty());
    }

    #[test]
    fn a_truncated_assignment_is_read_as_far_as_it_goes() {
        let bytes = assignment(&[("orders", &[2, 5])]);
        for cut in 0..bytes.len() {
            let _ = assigned(&bytes[..cut], "orders");
        }
        assert!(assigned(&[0xff; 3], "orders").is_empty());
    }
}
