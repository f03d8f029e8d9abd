//! The PostgreSQL checks: it answers, the schema has every migration this build needs, and the
//! pools of every replica fit in its connection slots.

use super::{Finding, TIMEOUT};
use crate::config::CheckConfig;
use crate::db;

pub(super) async fn check(cfg: &CheckConfig) -> Vec<Finding> {
    let dependents = ["migrations", "connections"];
    let skip_rest = |first: Finding| {
        let mut out = vec![first];
        out.extend(dependents.map(|c| Finding::skipped(c, "PostgreSQL did not answer")));
        out
    };
    let pool = match db::pool(&cfg.run.worker.db, 1) {
        Ok(pool) => pool,
        Err(e) => {
            return skip_rest(Finding::fail(
                "postgres",
                e.to_string(),
                "check DATABASE_URL",
            ));
        }
    };
    if let Err(e) = db::ping(&pool, TIMEOUT).await {
        return skip_rest(Finding::fail(
            "postgres",
            e.to_string(),
            "check DATABASE_URL (host, database, user, password, sslmode) and egress NetworkPolicy",
        ));
    }
    let mut out = vec![Finding::ok("postgres", "answers")];
    out.push(match db::schema_status(&pool).await {
        Ok(status) => schema_verdict(&status),
        Err(e) => Finding::fail(
            "migrations",
            e.to_string(),
            "grant the worker's user SELECT on _sqlx_migrations",
        ),
    });
    let replicas = cfg.max_replicas.unwrap_or(1);
    out.push(match db::connection_slots(&pool).await {
        Ok(slots) => connections_verdict(cfg.run.worker.db_max_connections(), replicas, slots),
        Err(e) => Finding::fail(
            "connections",
            e.to_string(),
            "check the database user's rights",
        ),
    });
    pool.close().await;
    out
}

fn schema_verdict(status: &db::SchemaStatus) -> Finding {
    if !status.missing.is_empty() {
        return Finding::fail(
            "migrations",
            format!("the database lacks {}", status.missing.join(", ")),
            "run `order-worker migrate` (the pod's migrate initContainer does)",
        );
    }
    let known = status.applied - status.unknown.len();
    if status.unknown.is_empty() {
        Finding::ok("migrations", format!("all {known} applied"))
    } else {
        // `run` accepts such a database too: a newer build's migrations add to the schema.
        let unknown: Vec<String> = status.unknown.iter().map(i64::to_string).collect();
        Finding::ok(
            "migrations",
            format!(
                "all {known} applied; also {}, from a newer build",
                unknown.join(", ")
            ),
        )
    }
}

fn connections_verdict(per_replica: u32, replicas: u32, slots: i64) -> Finding {
    let needed = i64::from(per_replica) * i64::from(replicas);
    let detail = format!(
        "{replicas} replica(s) × {per_replica} connections = {needed} of the {slots} PostgreSQL allows (other clients not counted)"
    );
    if needed <= slots {
        Finding::ok("connections", detail)
    } else {
        Finding::fail(
            "connections",
            detail,
            "lower DB_MAX_CONNECTIONS or maxReplicaCount, or raise max_connections",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    #[test]
    fn pools_of_every_replica_must_fit_in_postgres_connection_slots() {
        assert_eq!(connections_verdict(4, 10, 97).status, Status::Ok);
        let f = connections_verdict(4, 30, 97);
        assert_eq!(f.status, Status::Fail);
        assert!(f.detail.contains("120 of the 97"), "{}", f.detail);
    }

    #[test]
    fn a_database_behind_or_ahead_of_the_build_fails_with_the_fix() {
        let behind = db::SchemaStatus {
            applied: 3,
            missing: vec!["20261130000002 (orders statistics target)".into()],
            unknown: vec![],
        };
        let f = schema_verdict(&behind);
        assert_eq!(f.status, Status::Fail);
        assert!(f.fix.unwrap().contains("order-worker migrate"));
        let ahead = db::SchemaStatus {
            applied: 5,
            missing: vec![],
            unknown: vec![20270101000001],
        };
        assert!(schema_verdict(&ahead).detail.contains("20270101000001"));
        assert_eq!(schema_verdict(&ahead).status, Status::Ok);
        let current = db::SchemaStatus {
            applied: 4,
            ..Default::default()
        };
        assert_eq!(schema_verdict(&current).status, Status::Ok);
    }
}
