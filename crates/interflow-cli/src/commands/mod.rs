//! The commands that talk to a node's local listener, one module each, and the one match that
//! runs them over an open [`Connection`]. Each returns a serializable report (`reconcile`
//! streams its events); nothing here prints a national ID or a whole subject ref, and nothing
//! here opens a node's data directory.

pub mod audit;
pub mod channels;
pub mod coverage;
pub mod disclosure;
pub mod inbox;
pub mod lookup;
pub mod pending;
pub mod reconcile;
pub mod record;
pub mod resume;
pub mod stats;
pub mod submit;
pub mod verify;

use std::io::BufRead;

use anyhow::Context as _;

use crate::cli::{NodeCommand, ReconcileCommand};
use crate::conn::Connection;
use crate::{Ctx, Outcome, emit, human};

/// Runs a command that talks to a node over an open connection.
pub async fn run(
    command: &NodeCommand,
    conn: &Connection,
    ctx: &mut Ctx<'_>,
) -> anyhow::Result<Outcome> {
    match command {
        NodeCommand::Pending { max_age } => emit(ctx, &pending::fetch(conn, *max_age).await?),
        NodeCommand::Channels => emit(ctx, &channels::channels(conn).await?),
        NodeCommand::Record { id } => emit(ctx, &record::record(conn, id).await?),
        NodeCommand::Stats => emit(ctx, &stats::stats(conn).await?),
        NodeCommand::Coverage => emit(ctx, &coverage::coverage(conn).await?),
        NodeCommand::Lookup { id } => {
            let id = national_id(id, ctx.stdin)?;
            emit(ctx, &lookup::lookup(conn, &id).await?)
        }
        NodeCommand::Disclosure { id } => {
            let id = national_id(id, ctx.stdin)?;
            emit(ctx, &disclosure::disclosure(conn, &id).await?)
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
        NodeCommand::Verify => emit(ctx, &verify::verify(conn).await?),
        NodeCommand::Resume { channel } => emit(ctx, &resume::resume(conn, channel).await?),
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
fn national_id(arg: &str, input: &mut dyn BufRead) -> anyhow::Result<String> {
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
        arg.trim().to_owned()
    };
    let today = interflow_core::time::latest_permitted_date(human::now_ms(), 0);
    interflow_core::NationalId::parse(&id, today)
        .context("the national id is invalid; check it and try again")?;
    Ok(id)
}
