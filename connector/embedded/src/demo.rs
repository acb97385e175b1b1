//! Deterministic demo data: sales (35403), customers (35404) and inventory (35405).
//!
//! Every number comes from a ChaCha8 generator with a fixed seed, so `generate()` always returns the
//! same bytes. Planted patterns (so every analysis tool has something true to find):
//! - sales: yearly seasonality (peak in early December), weekend lift for retail/online, +18 % a year
//!   trend, a level shift (region West ×1.8 from 2025-07-01) and five bulk-order outlier days;
//! - customers: order value by age group and segment, lifetime value ≈ orders × order value, six
//!   customers with extreme order values and four with extreme order counts;
//! - inventory: category seasonality and trends, a level shift (Electronics demand ×1.45 from
//!   2025-04) and three demand spikes.

use std::fmt::Write as _;
use std::io::Write as _;

use chrono::{Datelike, Duration, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Poisson};

/// The demo catalog (hand-written, committed next to the data).
pub const CATALOG_YAML: &str = include_str!("../demo/catalog.yaml");

/// Bundled data files, by the names the catalog uses.
pub const FILES: &[(&str, &[u8])] = &[
    ("sales.csv.gz", include_bytes!("../demo/sales.csv.gz")),
    ("customers.csv", include_bytes!("../demo/customers.csv")),
    ("inventory.csv", include_bytes!("../demo/inventory.csv")),
];

/// First and last day of the sales data.
pub const SALES_START: (i32, u32, u32) = (2024, 1, 1);
pub const SALES_END: (i32, u32, u32) = (2025, 12, 31);

pub const REGIONS: [(&str, f64); 5] = [
    ("North", 1.0),
    ("South", 0.8),
    ("East", 1.2),
    ("West", 0.9),
    ("Central", 0.6),
];
pub const CHANNELS: [(&str, f64); 3] = [("Online", 1.0), ("Retail", 0.8), ("Wholesale", 0.5)];
/// (product, category, unit price, base units per region-channel-day)
pub const PRODUCTS: [(&str, &str, f64, f64); 12] = [
    ("Laptop", "Electronics", 900.0, 2.0),
    ("Smartphone", "Electronics", 600.0, 3.0),
    ("Headphones", "Electronics", 120.0, 6.0),
    ("Desk", "Furniture", 350.0, 2.0),
    ("Office Chair", "Furniture", 220.0, 3.0),
    ("Bookshelf", "Furniture", 150.0, 2.0),
    ("Jacket", "Apparel", 90.0, 5.0),
    ("Sneakers", "Apparel", 75.0, 6.0),
    ("T-Shirt", "Apparel", 20.0, 15.0),
    ("Coffee Beans", "Grocery", 15.0, 12.0),
    ("Olive Oil", "Grocery", 12.0, 10.0),
    ("Tea", "Grocery", 8.0, 12.0),
];
/// A planted outlier: (date, product, region, channel, extra units).
pub type SalesOutlier = ((i32, u32, u32), &'static str, &'static str, &'static str, f64);
/// Planted outliers.
pub const SALES_OUTLIERS: [SalesOutlier; 5] = [
    ((2024, 3, 15), "Laptop", "East", "Wholesale", 140.0),
    ((2024, 8, 9), "Smartphone", "North", "Wholesale", 220.0),
    ((2025, 2, 14), "Laptop", "South", "Wholesale", 160.0),
    ((2025, 5, 20), "Smartphone", "East", "Wholesale", 250.0),
    ((2025, 10, 3), "Laptop", "Central", "Wholesale", 180.0),
];
/// Level shift: region West sells this much more from this date on.
pub const SALES_SHIFT: ((i32, u32, u32), &str, f64) = ((2025, 7, 1), "West", 1.8);

fn ymd(t: (i32, u32, u32)) -> NaiveDate {
    NaiveDate::from_ymd_opt(t.0, t.1, t.2).expect("valid constant date")
}

fn category_cost_ratio(category: &str) -> f64 {
    match category {
        "Electronics" => 0.72,
        "Furniture" => 0.58,
        "Apparel" => 0.45,
        _ => 0.62,
    }
}

/// The sales CSV (uncompressed).
pub fn sales_csv() -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(35403);
    let noise = Normal::new(0.0, 0.02).expect("valid normal");
    let start = ymd(SALES_START);
    let end = ymd(SALES_END);
    let shift_from = ymd(SALES_SHIFT.0);
    let mut out = String::with_capacity(8 << 20);
    out.push_str("date,region,product,category,channel,units,revenue,cost\n");
    let mut day = start;
    while day <= end {
        let t = (day - start).num_days() as f64;
        let doy = f64::from(day.ordinal());
        let yearly = 1.0 + 0.25 * (2.0 * std::f64::consts::PI * (doy - 340.0) / 365.25).cos();
        let trend = 1.0 + 0.18 * t / 365.25;
        let weekend = matches!(day.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun);
        for (region, rw) in REGIONS {
            let shift = if region == SALES_SHIFT.1 && day >= shift_from {
                SALES_SHIFT.2
            } else {
                1.0
            };
            for (product, category, price, base) in PRODUCTS {
                for (channel, cw) in CHANNELS {
                    let weekly = match (weekend, channel) {
                        (true, "Wholesale") => 0.4,
                        (true, _) => 1.25,
                        (false, _) => 1.0,
                    };
                    let lambda = base * rw * cw * yearly * trend * weekly * shift;
                    let mut units = Poisson::new(lambda).expect("positive rate").sample(&mut rng);
                    for (d, p, r, c, extra) in SALES_OUTLIERS {
                        if ymd(d) == day && p == product && r == region && c == channel {
                            units += extra;
                        }
                    }
                    let discount = rng.random_range(0.0..0.10);
                    let revenue = (units * price * (1.0 - discount) * 100.0).round() / 100.0;
                    let ratio = category_cost_ratio(category) + noise.sample(&mut rng);
                    let cost = (revenue * ratio * 100.0).round() / 100.0;
                    let _ = writeln!(
                        out,
                        "{},{region},{product},{category},{channel},{units},{revenue:.2},{cost:.2}",
                        day.format("%Y-%m-%d")
                    );
                }
            }
        }
        day += Duration::days(1);
    }
    out
}

pub const AGE_GROUPS: [(&str, u32, u32, f64); 6] = [
    ("18-24", 18, 24, 45.0),
    ("25-34", 25, 34, 70.0),
    ("35-44", 35, 44, 95.0),
    ("45-54", 45, 54, 105.0),
    ("55-64", 55, 64, 85.0),
    ("65+", 65, 80, 60.0),
];
pub const SEGMENTS: [(&str, f64, f64, f64); 3] = [
    ("Consumer", 0.70, 1.0, 1.0),
    ("Small Business", 0.22, 1.5, 1.8),
    ("Enterprise", 0.08, 2.5, 4.0),
];
pub const CUSTOMER_COUNT: usize = 5000;
/// Customers (1-based index) with a planted extreme average order value (×12).
pub const HIGH_VALUE_CUSTOMERS: [usize; 6] = [137, 911, 1703, 2468, 3555, 4802];
/// Customers (1-based index) with a planted extreme order count (×10).
pub const FREQUENT_CUSTOMERS: [usize; 4] = [420, 1999, 3141, 4444];

/// The customers CSV.
pub fn customers_csv() -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(35404);
    let aov_noise = Normal::new(0.0, 0.2).expect("valid normal");
    let ltv_noise = Normal::new(0.0, 0.05).expect("valid normal");
    let first = NaiveDate::from_ymd_opt(2019, 1, 1).expect("valid");
    let last = NaiveDate::from_ymd_opt(2025, 12, 31).expect("valid");
    let span = (last - first).num_days();
    let mut out = String::new();
    out.push_str("customer_id,gender,age,age_group,region,segment,signup_date,tenure_months,orders,avg_order_value,lifetime_value\n");
    for i in 1..=CUSTOMER_COUNT {
        let g: f64 = rng.random();
        let gender = if g < 0.49 {
            "Female"
        } else if g < 0.97 {
            "Male"
        } else {
            "Non-binary"
        };
        let age: u32 = rng.random_range(18..=80);
        let (age_group, aov_base) = AGE_GROUPS
            .iter()
            .find(|(_, lo, hi, _)| (*lo..=*hi).contains(&age))
            .map(|(n, _, _, b)| (*n, *b))
            .expect("age groups cover 18..=80");
        let region = REGIONS[rng.random_range(0..REGIONS.len())].0;
        let s: f64 = rng.random();
        let mut acc = 0.0;
        let mut seg = SEGMENTS[0];
        for candidate in SEGMENTS {
            acc += candidate.1;
            if s < acc {
                seg = candidate;
                break;
            }
        }
        let signup = first + Duration::days(rng.random_range(0..=span));
        let tenure =
            ((last.year() - signup.year()) * 12 + last.month() as i32 - signup.month() as i32).max(0) as f64;
        let mut orders = Poisson::new(1.0 + tenure * 0.35 * seg.2)
            .expect("positive")
            .sample(&mut rng);
        let mut aov = aov_base * seg.3 * f64::exp(aov_noise.sample(&mut rng));
        if HIGH_VALUE_CUSTOMERS.contains(&i) {
            aov *= 12.0;
        }
        if FREQUENT_CUSTOMERS.contains(&i) {
            orders = (orders * 10.0).max(150.0);
        }
        let aov = (aov * 100.0).round() / 100.0;
        let ltv = (orders * aov * (1.0 + ltv_noise.sample(&mut rng)) * 100.0).round() / 100.0;
        let _ = writeln!(
            out,
            "C{i:05},{gender},{age},{age_group},{region},{},{},{tenure},{orders},{aov:.2},{ltv:.2}",
            seg.0,
            signup.format("%Y-%m-%d")
        );
    }
    out
}

/// (category, products, base monthly demand, yearly trend, seasonal amplitude, peak month)
pub type InventoryCategory = (&'static str, [&'static str; 4], f64, f64, f64, f64);
/// Inventory categories and their demand model.
pub const INVENTORY_CATEGORIES: [InventoryCategory; 5] = [
    (
        "Electronics",
        ["Laptop", "Smartphone", "Tablet", "Headphones"],
        400.0,
        0.05,
        0.35,
        12.0,
    ),
    (
        "Furniture",
        ["Desk", "Office Chair", "Bookshelf", "Sofa"],
        150.0,
        0.02,
        0.10,
        8.0,
    ),
    (
        "Apparel",
        ["Jacket", "Sneakers", "T-Shirt", "Jeans"],
        600.0,
        -0.10,
        0.25,
        10.0,
    ),
    (
        "Grocery",
        ["Coffee Beans", "Olive Oil", "Tea", "Pasta"],
        900.0,
        0.08,
        0.05,
        1.0,
    ),
    (
        "Toys",
        ["Puzzle", "Board Game", "Doll", "Building Blocks"],
        250.0,
        0.03,
        0.60,
        12.0,
    ),
];
pub const WAREHOUSES: [(&str, f64); 3] = [("Dallas", 1.0), ("Newark", 1.2), ("Reno", 0.7)];
/// Level shift in inventory demand: category × factor from this month on.
pub const INVENTORY_SHIFT: ((i32, u32, u32), &str, f64) = ((2025, 4, 1), "Electronics", 1.45);
/// A planted demand spike: (month, product, warehouse, factor).
pub type InventorySpike = ((i32, u32, u32), &'static str, &'static str, f64);
/// Planted demand spikes.
pub const INVENTORY_SPIKES: [InventorySpike; 3] = [
    ((2024, 7, 1), "Board Game", "Newark", 4.0),
    ((2023, 9, 1), "Sofa", "Dallas", 5.0),
    ((2025, 2, 1), "Pasta", "Reno", 3.5),
];

/// The inventory CSV (one row per month, product and warehouse; 2023-01 … 2025-12).
pub fn inventory_csv() -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(35405);
    let noise = Normal::new(0.0, 0.06).expect("valid normal");
    let shift_from = ymd(INVENTORY_SHIFT.0);
    let mut out = String::new();
    out.push_str("month,category,product,warehouse,demand,stock_level,units_received\n");
    for m in 0..36u32 {
        let month = NaiveDate::from_ymd_opt(2023 + (m / 12) as i32, m % 12 + 1, 1).expect("valid");
        let years = f64::from(m) / 12.0;
        for (category, products, base, trend, amp, peak) in INVENTORY_CATEGORIES {
            let season =
                1.0 + amp * (2.0 * std::f64::consts::PI * (f64::from(month.month()) - peak) / 12.0).cos();
            let shift = if category == INVENTORY_SHIFT.1 && month >= shift_from {
                INVENTORY_SHIFT.2
            } else {
                1.0
            };
            for (pi, product) in products.iter().enumerate() {
                let pw = 1.0 - 0.15 * pi as f64;
                for (wh, ww) in WAREHOUSES {
                    let mut d = base
                        * pw
                        * ww
                        * season
                        * (1.0 + trend * years)
                        * shift
                        * (1.0 + noise.sample(&mut rng));
                    for (sm, sp, sw, f) in INVENTORY_SPIKES {
                        if ymd(sm) == month && sp == *product && sw == wh {
                            d *= f;
                        }
                    }
                    let demand = d.round().max(0.0);
                    let cover: f64 = rng.random_range(1.2..2.0);
                    let stock = (demand * cover).round();
                    let received = (demand * rng.random_range(0.9..1.1)).round();
                    let _ = writeln!(
                        out,
                        "{},{category},{product},{wh},{demand},{stock},{received}",
                        month.format("%Y-%m-%d")
                    );
                }
            }
        }
    }
    out
}

/// Gzip with fixed header fields (mtime 0, no file name) so the output is reproducible.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// All generated data files, by file name, exactly as committed under `demo/`.
pub fn generate() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("sales.csv.gz", gzip(sales_csv().as_bytes())),
        ("customers.csv", customers_csv().into_bytes()),
        ("inventory.csv", inventory_csv().into_bytes()),
    ]
}
