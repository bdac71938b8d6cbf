//! `siphon check`: validates connector files, then asks PostgreSQL, Kafka
//! and the schema registry whether each connector could run, printing one
//! line per finding with the fix for each problem. Changes nothing.

use std::fmt::Write as _;

use crate::avro::registry::{RegistryClient, RegistryClientConfig};
use crate::config::ConnectorConfig;
use crate::kafka::topic;

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Not a problem (an `ok` line or a warning).
    pub ok: bool,
    /// Works, but weakens security: a WARN line.
    pub warning: bool,
    pub component: &'static str,
    pub message: String,
}

impl Finding {
    pub fn ok(component: &'static str, message: String) -> Finding {
        Finding {
            ok: true,
            warning: false,
            component,
            message,
        }
    }

    /// A WARN line: not a problem, but the operator should change it.
    pub fn warn(component: &'static str, message: String) -> Finding {
        Finding {
            ok: true,
            warning: true,
            component,
            message,
        }
    }

    pub fn problem(component: &'static str, message: String) -> Finding {
        Finding {
            ok: false,
            warning: false,
            component,
            message,
        }
    }
}

/// Checks one connector against its services.
pub async fn check_connector(cfg: &ConnectorConfig) -> Vec<Finding> {
    let mut findings = crate::postgres::preflight::check(cfg).await;
    findings.extend(crate::kafka::preflight::check(cfg).await);
    findings.extend(check_registry(cfg).await);
    findings.extend(
        cfg.security_warnings()
            .into_iter()
            .map(|(component, message)| Finding::warn(component, message)),
    );
    findings
}

async fn check_registry(cfg: &ConnectorConfig) -> Vec<Finding> {
    const COMPONENT: &str = "registry";
    let client = match RegistryClient::new(&RegistryClientConfig::from(&cfg.registry)) {
        Ok(c) => c,
        Err(e) => return vec![Finding::problem(COMPONENT, e.to_string())],
    };
    let subject = cfg.postgres.tables.first().map_or_else(
        || topic::value_subject(&cfg.kafka.offsets_topic),
        |t| {
            topic::value_subject(&topic::table_topic(
                &cfg.kafka.topic_prefix,
                &t.schema,
                &t.table,
            ))
        },
    );
    match client.compatibility(&subject).await {
        Ok(level) => {
            // A subject siphon creates gets the configured level instead.
            let configured = cfg
                .postgres
                .tables
                .first()
                .map(|t| cfg.schemas.compatibility_of(&t.schema, &t.table));
            let note = match (configured, client.versions(&subject).await) {
                (Some(configured), Err(crate::avro::registry::RegistryError::NotFound { .. })) => {
                    format!(
                        " (the subject does not exist yet; siphon will create it with {configured})"
                    )
                }
                _ => String::new(),
            };
            vec![Finding::ok(
                COMPONENT,
                format!(
                    "reached {}; compatibility level for {subject} is {level}{note}",
                    cfg.registry.url
                ),
            )]
        }
        Err(e) => vec![Finding::problem(
            COMPONENT,
            format!(
                "{}; check registry.url and its credentials",
                crate::pipeline::chain(&e)
            ),
        )],
    }
}

/// The report for one connector, and whether it found no problem.
pub fn render(cfg: &ConnectorConfig, findings: &[Finding]) -> (String, bool) {
    let mut out = String::new();
    let _ = writeln!(out, "{} (connector {})", cfg.file.display(), cfg.name);
    for f in findings {
        let mark = match (f.ok, f.warning) {
            (false, _) => "PROBLEM",
            (true, true) => "WARN   ",
            (true, false) => "ok     ",
        };
        let _ = writeln!(out, "  {mark} {}: {}", f.component, f.message);
    }
    let problems = findings.iter().filter(|f| !f.ok).count();
    if problems == 0 {
        let _ = writeln!(out, "  => ready to run");
    } else {
        let _ = writeln!(out, "  => {problems} problem(s) to fix");
    }
    (out, problems == 0)
}
