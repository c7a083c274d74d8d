"""The sample shop the embedded default is seeded with: a few related tables, real types."""

from __future__ import annotations

import random

import psycopg2

from replicator.adapters.postgres.connection import connection, translate_error
from replicator.adapters.postgres.settings import PostgresSettings
from replicator.domain.errors import SourceSchemaError

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


def simulate(
    settings: PostgresSettings, inserts: int, updates: int, deletes: int, seed: int | None = None
) -> dict[str, int]:
    """Random changes to the sample shop, one transaction each, to try CDC by hand.

    Inserts add an order with one or two items; updates change an order's status and total
    (and, now and then, a customer's tier); deletes remove an order (its items go by cascade).
    Returns how many of each were made (fewer if the tables run out of rows).
    """
    rng = random.Random(seed)
    done = {"inserts": 0, "updates": 0, "deletes": 0}
    with connection(settings) as conn:
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('public.orders') IS NOT NULL")
                row = cur.fetchone()
                if not (row and row[0]):
                    raise SourceSchemaError(
                        "simulate works on the sample shop (customers, products, orders, "
                        "order_items), which this database does not have"
                    )
            conn.commit()
            for _ in range(inserts):
                with conn, conn.cursor() as cur:
                    cur.execute(
                        "INSERT INTO orders (id, customer_id, status, total, ordered_at, note) "
                        "SELECT coalesce(max(id), 0) + 1, %s, 'new', 0, now(), %s FROM orders "
                        "RETURNING id",
                        (rng.randint(1, 200), rng.choice([None, "gift wrap", "call first"])),
                    )
                    (order_id,) = cur.fetchone() or (0,)
                    for line in range(1, rng.randint(1, 2) + 1):
                        cur.execute(
                            "INSERT INTO order_items SELECT %s, %s, p.id, %s, p.price "
                            "FROM products p WHERE p.id = %s",
                            (order_id, line, rng.randint(1, 5), rng.randint(1, 50)),
                        )
                    cur.execute(
                        "UPDATE orders SET total = (SELECT coalesce(sum(quantity * unit_price), 0) "
                        "FROM order_items WHERE order_id = %s) WHERE id = %s",
                        (order_id, order_id),
                    )
                done["inserts"] += 1
            for _ in range(updates):
                with conn, conn.cursor() as cur:
                    cur.execute(
                        "UPDATE orders SET status = %s, total = total + %s, "
                        "ship_date = CASE WHEN %s = 'shipped' THEN current_date END "
                        "WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1)",
                        (s := rng.choice(["paid", "shipped", "cancelled"]), rng.randint(0, 9), s),
                    )
                    if rng.random() < 0.3:
                        cur.execute(
                            "UPDATE customers SET tier = %s WHERE id = %s",
                            (rng.choice(["bronze", "silver", "gold"]), rng.randint(1, 200)),
                        )
                done["updates"] += 1
            for _ in range(deletes):
                with conn, conn.cursor() as cur:
                    cur.execute(
                        "DELETE FROM orders WHERE id = (SELECT id FROM orders ORDER BY random() "
                        "LIMIT 1)"
                    )
                    done["deletes"] += cur.rowcount
        except psycopg2.Error as e:
            raise translate_error(e, "simulating changes") from e
    return done
