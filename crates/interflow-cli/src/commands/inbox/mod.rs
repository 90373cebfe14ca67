//! `interflowctl inbox`: what arrived at this node, read as the bureau's own systems read it
//! through `Inbox` (client certificate with the `inbox` role). `pull`, `follow`, `ack` and
//! `consumers` show items with the subject as its short digest only; `match` answers by input
//! line number, never by national ID; `export` writes the feed (with the whole subject ref,
//! the pseudonym) as JSON Lines, CSV or a FHIR R4 Bundle.

pub mod args;
pub mod export;
pub mod fhir;
pub mod follow;
pub mod item;
pub mod matching;
pub mod pull;

use anyhow::Context as _;
use interflow_core::pb;

use crate::conn::Connection;
use crate::{Ctx, Outcome, emit};
use args::{InboxCommand, ReadArgs};

/// Runs an inbox command over an open connection.
pub async fn run(
    command: &InboxCommand,
    conn: &Connection,
    ctx: &mut Ctx<'_>,
) -> anyhow::Result<Outcome> {
    match command {
        InboxCommand::Pull { read, max, ack } => {
            let report = pull::pull(conn, read, *max).await?;
            let outcome = emit(ctx, &report)?;
            // After printing, so an item is never acknowledged unseen.
            if *ack && let Some(last) = report.items.last().map(|i| i.position) {
                pull::ack(conn, &read.consumer, last).await?;
                if !ctx.json {
                    writeln_out(ctx, &format!("acknowledged up to position {last}"))?;
                }
            }
            Ok(outcome)
        }
        InboxCommand::Follow { read, ack } => follow::follow(conn, read, *ack, ctx).await,
        InboxCommand::Ack { consumer, position } => {
            emit(ctx, &pull::ack(conn, consumer, *position).await?)
        }
        InboxCommand::Consumers { max_age } => emit(ctx, &pull::consumers(conn, *max_age).await?),
        InboxCommand::Match {
            ids,
            purpose,
            case_ref,
        } => {
            let lines = matching::read_ids(ids, ctx.stdin)?;
            let case_ref = case_ref.clone().unwrap_or_default();
            emit(
                ctx,
                &matching::run(conn, &lines, *purpose, &case_ref).await?,
            )
        }
        InboxCommand::Export { read, format, out } => {
            export::run(conn, read, *format, out.as_deref(), ctx).await
        }
    }
}

fn writeln_out(ctx: &mut Ctx<'_>, line: &str) -> anyhow::Result<()> {
    writeln!(ctx.out, "{line}").context("writing output")?;
    ctx.out.flush().context("writing output")
}

/// The `InboxFilter` of `--kind`, `--origin` and `--agreement`; `None` when no flag is given.
pub fn filter(read: &ReadArgs) -> anyhow::Result<Option<pb::InboxFilter>> {
    let kinds = read
        .kind
        .iter()
        .map(|k| {
            crate::names::kind_of(k.trim())
                .map(|k| k as i32)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown kind `{k}` in --kind; write `pregnancy` or `contraception`"
                    )
                })
        })
        .collect::<anyhow::Result<Vec<i32>>>()?;
    for o in &read.origin {
        interflow_core::RegionCode::parse(o.trim()).map_err(|e| {
            anyhow::anyhow!(
                "invalid region code `{o}` in --origin: {e}; write 6 digits, e.g. `310115`"
            )
        })?;
    }
    let f = pb::InboxFilter {
        kinds,
        origins: read.origin.iter().map(|o| o.trim().to_owned()).collect(),
        agreement_ids: read.agreement.clone(),
    };
    Ok((f != pb::InboxFilter::default()).then_some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(kind: &[&str], origin: &[&str]) -> ReadArgs {
        ReadArgs {
            consumer: "his".into(),
            after: None,
            kind: kind.iter().map(|s| s.to_string()).collect(),
            origin: origin.iter().map(|s| s.to_string()).collect(),
            agreement: vec![],
        }
    }

    #[test]
    fn filters_are_checked_here_and_absent_without_flags() {
        assert_eq!(filter(&read(&[], &[])).unwrap(), None);
        let f = filter(&read(&["pregnancy"], &["310115"])).unwrap().unwrap();
        assert_eq!(f.kinds, vec![pb::RecordKind::PregnancyStatus as i32]);
        assert_eq!(f.origins, vec!["310115"]);
        let e = filter(&read(&["retraction"], &[])).unwrap_err().to_string();
        assert!(
            e.contains("`retraction`") && e.contains("`pregnancy`"),
            "{e}"
        );
        assert!(filter(&read(&[], &["31"])).is_err());
    }

    #[test]
    fn purposes_map_to_the_wire_values() {
        assert_eq!(
            pb::Purpose::from(args::MatchPurpose::LegalObligation),
            pb::Purpose::LegalObligation
        );
        assert_eq!(
            pb::Purpose::from(args::MatchPurpose::ServiceContinuity) as i32,
            1
        );
    }
}
