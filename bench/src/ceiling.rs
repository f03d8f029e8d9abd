//! Phase 1, the ceiling: the stream's rows loaded into an identical, empty `orders` table by the
//! fastest methods PostgreSQL offers here (`loaders.rs`), each verified against the oracle and
//! against the others' final rows; and a round, a ceiling next to its end-to-end run.

use std::time::Duration;

use sqlx::Connection as _;

use crate::bench::{Bench, DB_PREFIX, TOPIC, log};
use crate::cpu::{CpuSnapshot, CpuUse, Party};
use crate::e2e::E2eResult;
use crate::loaders::{self, Row};
use crate::pg;

pub struct CeilingRun {
    pub round: usize,
    pub method: String,
    pub rows: usize,
    pub elapsed: Duration,
    pub cpu: CpuUse,
    /// Same final state as the oracle; an error = result not counted.
    pub ok: Result<(), String>,
    /// Counted as a candidate for the ceiling (the same work as the stream).
    pub candidate: bool,
}

impl CeilingRun {
    pub fn rate(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Rows per CPU-second of PostgreSQL (bench backends and shared processes) and the loader.
    pub fn rows_per_cpu_second(&self) -> f64 {
        let cpu = self.cpu.of(Party::PgBench)
            + self.cpu.of(Party::PgShared)
            + self.cpu.of(Party::Harness);
        self.rows as f64 / cpu.max(1e-9)
    }
}

/// One round of ceiling loads; `digest` is the final state the first verified load left, which
/// every later load (and every worker run) must leave too.
pub fn ceiling(
    b: &mut Bench,
    rows: &[Row],
    round: usize,
    digest: &mut Option<String>,
) -> Vec<CeilingRun> {
    let mut runs = Vec::new();
    // Every connection count with every statement size: a larger statement is cheaper per row
    // for PostgreSQL, and the ceiling is the fastest of them, not the worker's batch size.
    let mut loads: Vec<Load> =
        b.s.ceiling_batches
            .iter()
            .flat_map(|&batch| {
                b.s.ceiling_conns
                    .iter()
                    .map(move |&connections| Load::Unnest { connections, batch })
            })
            .collect();
    loads.push(Load::CopyMerge);
    if round == 0 {
        loads.push(Load::CopyFinal);
    }
    for load in loads {
        let method = load.name();
        let db = format!("ceil_{method}_r{round}");
        let url = b.fresh_db(&db);
        b.checkpoint();
        let before = CpuSnapshot::take(None, DB_PREFIX);
        let (n, elapsed, conns) = b.rt.block_on(async {
            match load {
                Load::Unnest { connections, batch } => {
                    let (t, conns) =
                        loaders::load_unnest(&url, TOPIC, rows, connections, batch).await;
                    (rows.len(), t, conns)
                }
                Load::CopyMerge => {
                    let (t, conns) = loaders::load_copy_merge(&url, TOPIC, rows).await;
                    (rows.len(), t, conns)
                }
                Load::CopyFinal => loaders::load_copy_final(&url, TOPIC, rows).await,
            }
        });
        // Before the connections close: their backends' CPU time is read from /proc.
        let cpu = CpuSnapshot::take(None, DB_PREFIX).since(&before);
        b.rt.block_on(async {
            for c in conns {
                let _ = c.close().await;
            }
        });
        let state = b.rt.block_on(pg::final_state(&url));
        b.drop_db(&db);
        let mut ok = b.check_state(&state);
        match (&*digest, &ok) {
            (None, Ok(())) => *digest = Some(state.digest.clone()),
            (Some(d), Ok(())) if *d != state.digest => {
                ok = Err("final rows differ from the other methods' (digest)".into())
            }
            _ => {}
        }
        let run = CeilingRun {
            round,
            method,
            rows: n,
            elapsed,
            cpu,
            ok,
            // The final rows only: less work than the stream, shown for scale.
            candidate: !matches!(load, Load::CopyFinal),
        };
        log(format!(
            "ceiling round {} {}: {} rows in {:.2}s = {:.0} rows/s {}",
            run.round + 1,
            run.method,
            run.rows,
            run.elapsed.as_secs_f64(),
            run.rate(),
            run.ok.as_ref().err().map_or("", |e| e.as_str())
        ));
        runs.push(run);
    }
    runs
}

/// One way of loading the rows.
#[derive(Clone, Copy)]
enum Load {
    /// UNNEST upserts of `batch` rows over `connections` connections.
    Unnest {
        connections: usize,
        batch: usize,
    },
    CopyMerge,
    CopyFinal,
}

impl Load {
    /// The name the report shows, e.g. `unnest x4 b1000`.
    fn name(self) -> String {
        match self {
            Self::Unnest { connections, batch } => format!("unnest x{connections} b{batch}"),
            Self::CopyMerge => "copy+merge".into(),
            Self::CopyFinal => "copy final rows only".into(),
        }
    }
}

/// One round: the ceiling loads, then the worker end to end, back to back.
pub struct RoundResult {
    pub ceiling: Vec<CeilingRun>,
    pub e2e: Option<E2eResult>,
}

impl RoundResult {
    /// The fastest load of this round that did the stream's work and left the right state.
    pub fn best(&self) -> Option<&CeilingRun> {
        self.ceiling
            .iter()
            .filter(|r| r.candidate && r.ok.is_ok())
            .max_by(|a, b| a.rate().total_cmp(&b.rate()))
    }
}
