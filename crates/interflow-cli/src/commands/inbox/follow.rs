//! `inbox follow`: a live tail of `Inbox.Follow`, one line (or, with `--json`, one JSON object)
//! per item as it arrives, until Ctrl-C or the node ends the stream. Only opening the stream is
//! bounded by `--timeout`; waiting for the next arrival is not.

use anyhow::Context as _;
use futures::StreamExt as _;
use interflow_core::pb;

use super::args::ReadArgs;
use super::item::ItemView;
use crate::conn::Connection;
use crate::{Ctx, Outcome};

pub async fn follow(
    conn: &Connection,
    read: &ReadArgs,
    ack: bool,
    ctx: &mut Ctx<'_>,
) -> anyhow::Result<Outcome> {
    let req = pb::FollowRequest {
        consumer: read.consumer.clone(),
        after: read.after,
        filter: super::filter(read)?,
    };
    let mut stream = conn.unary("Inbox.Follow", conn.inbox().follow(req)).await?;
    if !ctx.json {
        writeln!(
            ctx.out,
            "following the inbox as consumer `{}`; Ctrl-C to stop",
            read.consumer
        )
        .context("writing output")?;
        ctx.out.flush().context("writing output")?;
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut shown = 0u64;
    loop {
        let next = tokio::select! {
            _ = &mut ctrl_c => break,
            next = stream.next() => next,
        };
        let item = match next {
            None => {
                if !ctx.json {
                    writeln!(ctx.out, "the node closed the stream after {shown} items")
                        .context("writing output")?;
                }
                break;
            }
            Some(Err(status)) => return Err(conn.call_error("Inbox.Follow", status)),
            Some(Ok(item)) => item,
        };
        let view = ItemView::from_item(&item);
        if ctx.json {
            serde_json::to_writer(&mut *ctx.out, &view).context("writing json")?;
            writeln!(ctx.out).context("writing output")?;
        } else {
            writeln!(ctx.out, "{}", view.line()).context("writing output")?;
        }
        ctx.out.flush().context("writing output")?;
        shown += 1;
        if ack {
            super::pull::ack(conn, &read.consumer, item.position).await?;
        }
    }
    ctx.out.flush().context("writing output")?;
    Ok(Outcome::Success)
}
