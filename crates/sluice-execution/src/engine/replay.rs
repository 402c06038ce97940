//! The journal's side of the engine: rebuilding every order, position and the
//! paper wallets from the journal at start, and the journal's form of a
//! transition and back.

use sluice_domain::{Exchange, Qty, Side, Symbol};
use sluice_proto::execution::v1 as pb;
use sluice_rate::Time;
use tonic::Status;

use super::{Engine, Tracked, dec, market_key, tif_of};
use crate::config::{AccountId, ExecutionConfig};
use crate::order::{Event, Fill, OrderState, Status as OrderStatus};
use crate::paper::PaperOrder;

impl Engine {
    /// Rebuilds every order, position and the paper wallets from the journal.
    pub async fn rebuild(&mut self) -> Result<usize, Status> {
        let entries = self.journal.replay().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let n = entries.len();
        for (subject, e) in entries {
            let cid = e.client_order_id.clone();
            match e.entry {
                Some(pb::journal_entry::Entry::Intent(o)) => {
                    let (Ok(account), Ok(symbol)) = (AccountId::parse(&o.account), o.symbol.replace('-', "/").parse::<Symbol>()) else {
                        tracing::error!(client_order_id = %cid, "a journaled order names an unknown account or symbol; skipped");
                        continue;
                    };
                    let side = if o.side == pb::Side::Sell as i32 { Side::Sell } else { Side::Buy };
                    let venue = self
                        .cfg
                        .strategies
                        .iter()
                        .find(|s| s.account == account && s.symbol == symbol)
                        .map_or_else(|| account.exchange.to_string(), |s| s.venue.clone());
                    let quantity = Qty::new(dec(&o.quantity)).unwrap_or(Qty::ZERO);
                    let created = Time::from_nanos(o.created_unix_ns.max(0) as u64);
                    self.orders.insert(
                        cid.clone(),
                        Tracked {
                            market: market_key(&venue, &symbol),
                            account,
                            symbol,
                            side,
                            state: OrderState::new(cid.clone(), quantity, created),
                            seq: e.seq,
                            subject,
                            sent_at: None,
                            intent: o,
                        },
                    );
                    // Its first decision, journaled with it.
                    if let Some(t) = self.orders.get_mut(&cid)
                        && let Some(event) = e.then.as_ref().and_then(|tr| event_of(tr, created))
                        && t.state.apply(&event, created).is_ok()
                    {
                        t.seq = e.seq + 1;
                        if event == Event::Submit {
                            t.sent_at = Some(created);
                        }
                    }
                }
                Some(pb::journal_entry::Entry::Transition(tr)) => {
                    let Some(t) = self.orders.get_mut(&cid) else { continue };
                    let at = Time::from_nanos(e.time_unix_ns.max(0) as u64);
                    let Some(event) = event_of(&tr, at) else { continue };
                    if t.state.apply(&event, at).is_ok() {
                        t.seq = e.seq;
                        if event == Event::Submit {
                            t.sent_at = Some(at);
                        }
                        if let Event::Fill(f) = &event {
                            let (account, symbol, side) = (t.account.clone(), t.symbol.clone(), t.side);
                            self.on_fill(&account, &symbol, side, f);
                        }
                    }
                }
                None => {}
            }
        }
        if self.paper_mode() {
            self.rebuild_paper();
        }
        Ok(n)
    }

    /// The paper venue as the journal leaves it: starting balances, every fill,
    /// and the open orders resting with their funds locked.
    fn rebuild_paper(&mut self) {
        let fees_of = |ex: Exchange, cfg: &ExecutionConfig| cfg.paper.fees.get(&ex).copied();
        let orders: Vec<Tracked> =
            self.orders.values().filter(|t| t.intent.paper && t.state.status != OrderStatus::Initialized).cloned().collect();
        for t in orders {
            let Some(fees) = fees_of(t.account.exchange, &self.cfg) else { continue };
            let order = PaperOrder {
                client_order_id: t.state.client_order_id.clone(),
                account: t.account.to_string(),
                market: t.market.clone(),
                base: t.symbol.base.to_string(),
                quote: t.symbol.quote.to_string(),
                side: t.side,
                quantity: t.state.quantity.get(),
                limit: dec(&t.intent.price),
                tif: tif_of(t.intent.time_in_force),
                market_order: t.intent.r#type == pb::OrderType::Market as i32,
                fees,
            };
            let status = t.state.status;
            if matches!(status, OrderStatus::Denied | OrderStatus::Rejected) {
                continue;
            }
            self.paper.restore(
                order,
                t.state.filled.get(),
                t.state.filled_notional,
                t.state.fees.iter().map(|(_, v)| *v).sum(),
                status.is_open(),
                t.state.trade_ids.len() as u64,
            );
        }
    }
}

/// The journal's form of a transition.
pub(super) fn transition_entry(event: &Event, state: &OrderState, intent: &pb::Order) -> pb::Transition {
    let reason = match event {
        Event::Deny { reason }
        | Event::NotSent { reason }
        | Event::Rejected { reason }
        | Event::Ambiguous { reason }
        | Event::CancelFailed { reason }
        | Event::Cancelled { reason }
        | Event::Expired { reason } => reason.clone(),
        _ => String::new(),
    };
    let fill = match event {
        Event::Fill(f) => Some(pb::ExecFill {
            account: intent.account.clone(),
            symbol: intent.symbol.clone(),
            client_order_id: intent.client_order_id.clone(),
            trade_id: f.trade_id.clone(),
            side: intent.side,
            price: f.price.normalize().to_string(),
            quantity: f.quantity.to_string(),
            fee: f.fee.normalize().to_string(),
            fee_asset: f.fee_asset.clone(),
            maker: f.maker,
            time_unix_ns: f.time.as_nanos() as i64,
            paper: intent.paper,
        }),
        _ => None,
    };
    let venue_order_id = match event {
        Event::Accepted { venue_order_id } => venue_order_id.clone().unwrap_or_default(),
        _ => state.venue_order_id.clone().unwrap_or_default(),
    };
    pb::Transition { event: event.name().into(), reason, venue_order_id, fill }
}

/// A journaled transition back as an event (`None`: not one this version knows).
fn event_of(t: &pb::Transition, at: Time) -> Option<Event> {
    let reason = t.reason.clone();
    Some(match t.event.as_str() {
        "deny" => Event::Deny { reason },
        "submit" => Event::Submit,
        "not_sent" => Event::NotSent { reason },
        "rejected" => Event::Rejected { reason },
        "ambiguous" => Event::Ambiguous { reason },
        "accepted" => Event::Accepted { venue_order_id: (!t.venue_order_id.is_empty()).then(|| t.venue_order_id.clone()) },
        "fill" => {
            let f = t.fill.as_ref()?;
            Event::Fill(Fill {
                trade_id: f.trade_id.clone(),
                quantity: f.quantity.parse().ok()?,
                price: f.price.parse().ok()?,
                fee: f.fee.parse().unwrap_or_default(),
                fee_asset: f.fee_asset.clone(),
                maker: f.maker,
                time: if f.time_unix_ns > 0 { Time::from_nanos(f.time_unix_ns as u64) } else { at },
            })
        }
        "cancel_requested" => Event::CancelRequested,
        "cancel_failed" => Event::CancelFailed { reason },
        "cancelled" => Event::Cancelled { reason },
        "expired" => Event::Expired { reason },
        _ => return None,
    })
}
