//! The demo's orders: what `POST /checkout` accepts, the `Order` its snapshot points capture
//! (the shape of the design's reference payload, `card_token` included so redaction has
//! something to do), and generated orders for requests without a body and for the synthetic
//! traffic.

use serde::{Deserialize, Serialize};

/// Most line items one order may have.
pub const MAX_ITEMS: usize = 50;
/// Most of one item in an order.
pub const MAX_QTY: u32 = 1_000;
/// Dearest item accepted (cents).
pub const MAX_PRICE_CENTS: u64 = 10_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct Order {
    pub id: u64,
    pub user: User,
    pub items: Vec<Item>,
    pub total_cents: u64,
    pub currency: String,
    /// A payment token: the agent's redaction withholds it by its name.
    pub card_token: String,
    pub created_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub email: String,
    pub tier: Tier,
    pub address: Address,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tier {
    Free,
    Silver,
    Gold,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Address {
    pub street: String,
    pub city: String,
    pub zip: String,
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub qty: u32,
    pub price_cents: u64,
}

/// The body of `POST /checkout`. The total is computed here, never taken from the client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    pub user: User,
    pub items: Vec<Item>,
    #[serde(default = "default_currency")]
    pub currency: String,
    pub card_token: String,
    #[serde(default)]
    pub coupon: Option<String>,
}

fn default_currency() -> String {
    "EUR".to_owned()
}

/// Why an order was refused (answered with 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    #[error("an order needs at least one item")]
    NoItems,
    #[error("at most {MAX_ITEMS} items per order")]
    TooManyItems,
    #[error("item `{sku}`: quantity must be 1 to {MAX_QTY}")]
    Quantity { sku: String },
    #[error("item `{sku}`: price must be 1 to {MAX_PRICE_CENTS} cents")]
    Price { sku: String },
    #[error("currency must be three capital letters")]
    Currency,
}

impl CheckoutRequest {
    /// The order to process, with its total computed from the items.
    pub fn into_order(self, id: u64, now: u64) -> Result<(Order, Option<String>), OrderError> {
        if self.items.is_empty() {
            return Err(OrderError::NoItems);
        }
        if self.items.len() > MAX_ITEMS {
            return Err(OrderError::TooManyItems);
        }
        let mut total: u64 = 0;
        for item in &self.items {
            if item.qty == 0 || item.qty > MAX_QTY {
                return Err(OrderError::Quantity {
                    sku: item.sku.clone(),
                });
            }
            if item.price_cents == 0 || item.price_cents > MAX_PRICE_CENTS {
                return Err(OrderError::Price {
                    sku: item.sku.clone(),
                });
            }
            // Bounded above: 50 × 1 000 × 10^7 fits a u64 many times over.
            total += u64::from(item.qty) * item.price_cents;
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(OrderError::Currency);
        }
        let order = Order {
            id,
            user: self.user,
            items: self.items,
            total_cents: total,
            currency: self.currency,
            card_token: self.card_token,
            created_at: now,
        };
        Ok((order, self.coupon))
    }
}

/// A small deterministic generator (xorshift64): the demo needs variety, not secrecy.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// Seeded from the clock.
    pub fn from_clock() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5eed, |d| d.as_nanos() as u64);
        Rng::new(nanos)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

const CITIES: [(&str, &str, &str); 4] = [
    ("London", "NW1 2DB", "GB"),
    ("Lyon", "69002", "FR"),
    ("Berlin", "10115", "DE"),
    ("Porto", "4000-322", "PT"),
];
const COUPONS: [&str; 4] = ["SPRING10", "WELCOME5", "VIP20", "FREESHIP"];

/// A varied order: every tier, one to six items, totals from a few euros to a few hundred
/// (many over 100 €), a coupon on about one in four.
pub fn generated(rng: &mut Rng) -> CheckoutRequest {
    let user_id = 10_000 + rng.below(5_000);
    let tier = match rng.below(3) {
        0 => Tier::Free,
        1 => Tier::Silver,
        _ => Tier::Gold,
    };
    let (city, zip, country) = CITIES[rng.below(CITIES.len() as u64) as usize];
    let items = (0..1 + rng.below(6))
        .map(|_| Item {
            sku: format!("SKU-{:05}", 1_000 + rng.below(40)),
            qty: 1 + rng.below(4) as u32,
            price_cents: 199 + rng.below(4_800),
        })
        .collect();
    CheckoutRequest {
        user: User {
            id: user_id,
            email: format!("user{user_id}@example.com"),
            tier,
            address: Address {
                street: format!("{} Analytical Engine Row", 1 + rng.below(200)),
                city: city.to_owned(),
                zip: zip.to_owned(),
                country: country.to_owned(),
            },
        },
        items,
        currency: "EUR".to_owned(),
        card_token: format!("tok_4242{:012}", rng.below(1_000_000_000_000)),
        coupon: rng
            .below(4)
            .eq(&0)
            .then(|| COUPONS[rng.below(COUPONS.len() as u64) as usize].to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_orders_vary_and_many_are_large() {
        let mut rng = Rng::new(7);
        let orders: Vec<Order> = (0..200)
            .map(|id| {
                generated(&mut rng)
                    .into_order(id, 0)
                    .expect("generated orders are valid")
                    .0
            })
            .collect();
        assert!(orders.iter().filter(|o| o.total_cents > 10_000).count() > 20);
        assert!(orders.iter().any(|o| o.total_cents <= 10_000));
        for tier in [Tier::Free, Tier::Silver, Tier::Gold] {
            assert!(orders.iter().any(|o| o.user.tier == tier));
        }
    }

    #[test]
    fn totals_are_computed_and_bad_items_refused() {
        let mut request = generated(&mut Rng::new(3));
        request.items = vec![
            Item {
                sku: "A".into(),
                qty: 2,
                price_cents: 500,
            },
            Item {
                sku: "B".into(),
                qty: 1,
                price_cents: 250,
            },
        ];
        let (order, _) = request.clone().into_order(1, 0).expect("valid");
        assert_eq!(order.total_cents, 1_250);
        request.items[1].qty = 0;
        assert_eq!(
            request.clone().into_order(1, 0).unwrap_err(),
            OrderError::Quantity { sku: "B".into() }
        );
        request.items.clear();
        assert_eq!(request.into_order(1, 0).unwrap_err(), OrderError::NoItems);
    }
}
