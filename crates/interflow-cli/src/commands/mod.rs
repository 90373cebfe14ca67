//! The commands that talk to a node's local listener, one module each, and the one match that
//! runs them over an open [`Connection`]. Each returns a serializable report (`reconcile`
//! streams its events); nothing here prints a national ID or a whole subject ref, and nothing
//! here opens a node's data directory.

pub mod audit;
pub mod channels;
pub mod coverage;
pub mod disclosure;
pub mod federation;
pub mod inbox;
pub mod lookup;
pub mod pending;
pub mod reconcile;
pub mod record;
pub mod reload;
pub mod resume;
pub mod stats;
pub mod submit;
pub mod terminate;
pub mod verify;

use std::io::BufRead;

use anyhow::Context as _;

use crate::cli::{NodeCommand, Purpose, ReadWhy, ReconcileCommand};
use crate::conn::Connection;
use crate::{Ctx, Outcome, emit, human};
use interflow_core::pb;

/// Runs a command that talks to a node over an open connection.
pub async fn run(
    command: &NodeCommand,
    conn: &Connection,
    ctx: &mut Ctx<'_>,
) -> anyhow::Result<Outcome> {
    match command {
        NodeCommand::Pending { max_age } => emit(ctx, &pending::fetch(conn, *max_age).await?),
        NodeCommand::Channels => emit(ctx, &channels::channels(conn).await?),
        NodeCommand::Record { id, why } => {
            let why = Why::required("record", why)?;
            emit(ctx, &record::record(conn, id, &why).await?)
        }
        NodeCommand::Stats => emit(ctx, &stats::stats(conn).await?),
        NodeCommand::Coverage => emit(ctx, &coverage::coverage(conn).await?),
        NodeCommand::Lookup { id, why } => {
            let why = Why::required("lookup", why)?;
            let id = national_id("lookup", id, ctx.stdin)?;
            emit(ctx, &lookup::lookup(conn, &id, &why).await?)
        }
        NodeCommand::Disclosure { id, why } => {
            let why = Why::required("disclosure", why)?;
            let id = national_id("disclosure", id, ctx.stdin)?;
            emit(ctx, &disclosure::disclosure(conn, &id, &why).await?)
        }
        NodeCommand::Submit {
            file,
            format,
            batch,
            errors,
        } => {
            let opts = submit::Options {
                file: file.clone(),
                format: *format,
                batch: usize::try_from(*batch).unwrap_or(200),
                errors: errors.clone(),
                progress: ctx.progress,
            };
            emit(ctx, &submit::run(conn, &opts).await?)
        }
        NodeCommand::Reconcile {
            sub: Some(ReconcileCommand::Reports { limit }),
            ..
        } => emit(ctx, &reconcile::reconcile_reports(conn, *limit).await?),
        NodeCommand::Reconcile { peer, recover, .. } => {
            reconcile::reconcile(conn, *peer, *recover, ctx).await
        }
        NodeCommand::Inbox(c) => inbox::run(c, conn, ctx).await,
        NodeCommand::Verify { with_peers } => emit(ctx, &verify::verify(conn, *with_peers).await?),
        NodeCommand::Resume { channel } => emit(ctx, &resume::resume(conn, channel).await?),
        NodeCommand::Reload => emit(ctx, &reload::reload(conn).await?),
        NodeCommand::Federation => emit(ctx, &federation::federation(conn).await?),
        NodeCommand::Audit {
            since,
            limit,
            oldest_first,
        } => {
            let since_ms = match since {
                Some(s) => human::parse_since(s, human::now_ms())
                    .map_err(anyhow::Error::msg)
                    .context("reading --since")?,
                None => 0,
            };
            emit(
                ctx,
                &audit::audit(conn, since_ms, *limit, !*oldest_first).await?,
            )
        }
    }
}

/// The national ID of `lookup` and `disclosure`: the flag's value, or with `-` one line of
/// `input` (never echoed). Checked here, so a typo is reported without a round trip and an
/// audit entry at the node.
fn national_id(command: &str, arg: &str, input: &mut dyn BufRead) -> anyhow::Result<String> {
    let id = if arg == "-" {
        let mut line = String::new();
        input
            .read_line(&mut line)
            .context("reading the national id from standard input")?;
        let id = line.trim().to_owned();
        anyhow::ensure!(
            !id.is_empty(),
            "no national id on standard input; pipe it in, e.g. `interflowctl lookup --id - < id.txt`"
        );
        id
    } else {
        eprintln!("{}", id_argument_warning(command));
        arg.trim().to_owned()
    };
    let today = interflow_core::time::latest_permitted_date(human::now_ms(), 0);
    interflow_core::NationalId::parse(&id, today)
        .context("the national id is invalid; check it and try again")?;
    Ok(id)
}

/// What the CLI says on standard error when a national ID is given on the command line.
pub fn id_argument_warning(command: &str) -> String {
    format!(
        "warning: a national id given as an argument stays in the shell history and shows in `ps` to other users of this machine; next time use `--id -` and pipe it in, e.g. `interflowctl {command} --id - --purpose ... < id.txt`"
    )
}

/// Why a person's data is read, as the node's request fields carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Why {
    pub purpose: pb::Purpose,
    pub case_ref: String,
}

impl From<Purpose> for pb::Purpose {
    fn from(p: Purpose) -> pb::Purpose {
        match p {
            Purpose::ServiceContinuity => pb::Purpose::ServiceContinuity,
            Purpose::OwnRequest => pb::Purpose::OwnRequest,
            Purpose::Correction => pb::Purpose::Correction,
            Purpose::Audit => pb::Purpose::Audit,
            Purpose::LegalObligation => pb::Purpose::LegalObligation,
        }
    }
}

impl Why {
    /// The purpose `command` needs, or an error that says what to give. The node checks the
    /// case reference (and refuses it precisely); this only passes it on.
    pub fn required(command: &str, why: &ReadWhy) -> anyhow::Result<Why> {
        let purpose = why.purpose.ok_or_else(|| {
            anyhow::anyhow!(
                "`{command}` reads a person's data and needs `--purpose`: why is it read? one of service-continuity, own-request, correction, audit, legal-obligation; add `--case REF` to name the bureau's case (the node writes both to its audit log)"
            )
        })?;
        Ok(Why {
            purpose: purpose.into(),
            case_ref: why.case_ref.clone().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_without_a_purpose_says_which_flag_and_values_to_give() {
        let none = ReadWhy {
            purpose: None,
            case_ref: None,
        };
        let e = Why::required("lookup", &none).unwrap_err().to_string();
        assert!(e.contains("`lookup`") && e.contains("--purpose"), "{e}");
        assert!(e.contains("own-request") && e.contains("--case"), "{e}");
        let some = ReadWhy {
            purpose: Some(Purpose::OwnRequest),
            case_ref: Some("K-9".into()),
        };
        assert_eq!(
            Why::required("lookup", &some).unwrap(),
            Why {
                purpose: pb::Purpose::OwnRequest,
                case_ref: "K-9".into()
            }
        );
    }
}
