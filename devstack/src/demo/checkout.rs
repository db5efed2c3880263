//! The demo's business logic and its snapshot points: routing a request, applying a discount,
//! reserving stock, charging and — for orders the fraud check flags — refunding.
//!
//! The points are the quickstart's material: `checkout.apply_discount` holds a whole `Order`
//! (whose `card_token` the agent redacts) and a Debug-captured coupon; `payments.charge` holds
//! a [`Secret`] processor key that is never captured; everything under `payments.` needs an
//! approval under the default policies. Each request runs inside a `request` span with a
//! `request_id`, so a capture can be narrowed to one request with `ctx.request_id`.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use loupe_agent::{Secret, snapshot};
use serde::Serialize;

use super::order::{self, CheckoutRequest, Order, Rng, Tier};

/// Orders over this total (cents) are refunded by the fraud check after charging, so
/// `payments.refund` gets hits too.
const FRAUD_REVIEW_CENTS: u64 = 50_000;

/// A coupon as the checkout knows it; captured through `Debug` (`?coupon`).
#[derive(Debug)]
#[allow(dead_code)] // read through Debug by the snapshot
pub struct Coupon {
    code: String,
    percent_off: u64,
}

fn coupon(code: &str) -> Option<Coupon> {
    let percent_off = match code {
        "SPRING10" => 10,
        "WELCOME5" => 5,
        "VIP20" => 20,
        _ => return None,
    };
    Some(Coupon {
        code: code.to_owned(),
        percent_off,
    })
}

/// The answer to a request: status and JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: String,
}

impl Reply {
    fn json(status: StatusCode, body: &impl Serialize) -> Reply {
        Reply {
            status,
            body: serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned()),
        }
    }

    pub fn error(status: StatusCode, message: &str) -> Reply {
        Reply::json(status, &serde_json::json!({ "error": message }))
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[derive(Debug, Serialize)]
struct Receipt<'a> {
    order_id: u64,
    request_id: &'a str,
    total_cents: u64,
    discount_pct: u64,
    charged_cents: u64,
    refunded: bool,
    status: &'static str,
}

/// What the handlers share: order ids, the generator for body-less checkouts, the processor key.
pub struct Checkout {
    next_order: AtomicU64,
    rng: std::sync::Mutex<Rng>,
    processor_key: Secret<String>,
}

impl Default for Checkout {
    fn default() -> Self {
        Checkout {
            next_order: AtomicU64::new(1),
            rng: std::sync::Mutex::new(Rng::from_clock()),
            processor_key: Secret::new("pk_live_demo_never_leaves".to_owned()),
        }
    }
}

impl Checkout {
    /// `GET /health`.
    pub fn health() -> Reply {
        Reply::json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
    }

    /// `POST /checkout` with `body`; `request_id` is already on the current span.
    pub fn checkout(&self, body: &[u8], request_id: &str) -> Reply {
        let order_request = if body.iter().all(u8::is_ascii_whitespace) {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            order::generated(&mut rng)
        } else {
            match serde_json::from_slice::<CheckoutRequest>(body) {
                Ok(order) => order,
                Err(error) => {
                    return Reply::error(
                        StatusCode::BAD_REQUEST,
                        &format!("the body is not a valid order: {error}"),
                    );
                }
            }
        };
        let id = self.next_order.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (order, coupon_code) = match order_request.into_order(id, now) {
            Ok(parsed) => parsed,
            Err(error) => {
                return Reply::error(StatusCode::UNPROCESSABLE_ENTITY, &error.to_string());
            }
        };
        let coupon = coupon_code.as_deref().and_then(coupon);
        let (discount_pct, amount) = apply_discount(&order, coupon.as_ref());
        reserve_inventory(&order);
        charge(&order, amount, &self.processor_key);
        let refunded = amount > FRAUD_REVIEW_CENTS;
        if refunded {
            refund(&order, amount, "fraud_review");
        }
        Reply::json(
            StatusCode::OK,
            &Receipt {
                order_id: order.id,
                request_id,
                total_cents: order.total_cents,
                discount_pct,
                charged_cents: amount,
                refunded,
                status: if refunded { "refunded" } else { "charged" },
            },
        )
    }
}

/// The tier discount plus the coupon's, capped at 30 %. Returns the percentage and the amount.
fn apply_discount(order: &Order, coupon: Option<&Coupon>) -> (u64, u64) {
    let tier_pct = match order.user.tier {
        Tier::Gold => 10,
        Tier::Silver => 5,
        Tier::Free => 0,
    };
    let discount_pct = (tier_pct + coupon.map_or(0, |c| c.percent_off)).min(30);
    snapshot!("checkout.apply_discount", order, ?coupon, discount_pct);
    (discount_pct, order.total_cents * (100 - discount_pct) / 100)
}

fn reserve_inventory(order: &Order) {
    let units: u64 = order.items.iter().map(|item| u64::from(item.qty)).sum();
    let warehouse = match order.user.address.country.as_str() {
        "GB" => "lhr-1",
        _ => "fra-1",
    };
    snapshot!(
        "checkout.reserve_inventory",
        order_id = order.id,
        items = &order.items,
        units,
        warehouse
    );
}

fn charge(order: &Order, amount_cents: u64, processor_key: &Secret<String>) {
    snapshot!(
        "payments.charge",
        order_id = order.id,
        amount_cents,
        currency = &order.currency,
        processor_key
    );
}

fn refund(order: &Order, amount_cents: u64, reason: &str) {
    snapshot!(
        "payments.refund",
        order_id = order.id,
        amount_cents,
        %reason
    );
}
