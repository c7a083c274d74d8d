"""The sample shop the embedded default is seeded with: a few related tables, real types."""

from __future__ import annotations

import psycopg2

from replicator.adapters.postgres.connection import connection, translate_error
from replicator.adapters.postgres.settings import PostgresSettings

SAMPLE_TABLES = ("customers", "products", "orders", "order_items")

_SCHEMA_AND_DATA = """
CREATE TYPE customer_tier AS ENUM ('bronze', 'silver', 'gold');
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped', 'cancelled');

CREATE TABLE customers (
    id          integer PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    full_name   varchar(120) NOT NULL,
    country     char(2),
    tier        customer_tier NOT NULL DEFAULT 'bronze',
    tags        text[],
    created_at  timestamptz NOT NULL
);
CREATE TABLE products (
    id            integer PRIMARY KEY,
    sku           uuid NOT NULL,
    name          varchar(200) NOT NULL,
    price         numeric(10,2) NOT NULL,
    weight_kg     real,
    attributes    jsonb,
    discontinued  boolean NOT NULL DEFAULT false
);
CREATE TABLE orders (
    id               bigint PRIMARY KEY,
    customer_id      integer NOT NULL REFERENCES customers(id),
    status           order_status NOT NULL,
    total            numeric(12,2) NOT NULL,
    ordered_at       timestamptz NOT NULL,
    ship_date        date,
    delivery_window  interval,
    note             text
);
CREATE TABLE order_items (
    order_id    bigint NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    line_no     smallint NOT NULL,
    product_id  integer NOT NULL REFERENCES products(id),
    quantity    integer NOT NULL,
    unit_price  numeric(10,2) NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

INSERT INTO customers
SELECT g,
       'customer' || g || '@example.com',
       initcap(substr(md5(g::text), 1, 6)) || ' ' || initcap(substr(md5(g::text), 7, 8)),
       (ARRAY['DE', 'FR', 'US', 'JP', 'BR', NULL])[1 + g % 6],
       (ARRAY['bronze', 'silver', 'gold'])[1 + g % 3]::customer_tier,
       CASE WHEN g % 4 = 0 THEN NULL ELSE (ARRAY['newsletter', 'vip', ''])[1:1 + g % 3] END,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '7 hours 13 minutes'
FROM generate_series(1, 200) g;

INSERT INTO products
SELECT g,
       md5('sku' || g)::uuid,
       'Product ' || g || CASE WHEN g % 7 = 0 THEN ' - édition spéciale' ELSE '' END,
       round((g * 3.17 + 0.99)::numeric, 2),
       CASE WHEN g % 5 = 0 THEN NULL ELSE (g % 40) * 0.25 END,
       jsonb_build_object('color', (ARRAY['red', 'green', 'blue'])[1 + g % 3],
                          'sizes', jsonb_build_array('S', 'M', 'L'), 'rating', g % 5 + 0.5),
       g % 11 = 0
FROM generate_series(1, 50) g;

INSERT INTO orders
SELECT g,
       1 + (g * 7) % 200,
       (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + g % 4]::order_status,
       0,
       timestamptz '2024-03-01 08:00:00+00' + g * interval '53 minutes 7.25 seconds',
       CASE WHEN g % 4 = 2 THEN date '2024-03-03' + g / 20 END,
       CASE WHEN g % 3 = 0 THEN interval '2 days 4 hours' ELSE NULL END,
       CASE WHEN g % 10 = 0 THEN 'leave at the door' END
FROM generate_series(1, 1000) g;

INSERT INTO order_items
SELECT o, l, 1 + (o * 13 + l * 5) % 50, 1 + (o + l) % 4, p.price
FROM generate_series(1, 1000) o
CROSS JOIN LATERAL generate_series(1, 1 + o % 4) l
JOIN products p ON p.id = 1 + (o * 13 + l * 5) % 50;

UPDATE orders SET total = s.total
FROM (SELECT order_id, sum(quantity * unit_price) AS total FROM order_items GROUP BY order_id) s
WHERE s.order_id = orders.id;
"""


def ensure_sample_database(settings: PostgresSettings) -> bool:
    """Create and fill the sample tables in ``public`` unless they exist; True if created."""
    with connection(settings) as conn:
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT to_regclass('public.customers') IS NOT NULL")
                row = cur.fetchone()
                if row is not None and row[0]:
                    return False
                cur.execute(_SCHEMA_AND_DATA)
                return True
        except psycopg2.Error as e:
            raise translate_error(e, "creating the sample database") from e
