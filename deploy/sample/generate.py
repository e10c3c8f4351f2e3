#!/usr/bin/env python3
"""Generates the bundled sample dataset deploy/sample/web-events.jsonl and its
expected identity-resolution outcome deploy/sample/expected.json.

Each line of web-events.jsonl is one Segment HTTP Tracking API message, i.e. one
element of the `batch` array a Segment / RudderStack SDK posts to `/v1/batch`.

Deterministic: fixed seed, ids derived with uuid5, Python stdlib only.
Run:  python3 deploy/sample/generate.py           (writes both files and the expected-outcome
                                                   section of README.md, prints a summary)
      python3 deploy/sample/generate.py --check   (fails if the files on disk differ)
"""

import argparse
import json
import os
import random
import re
import sys
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

SEED = 20261120
WINDOW_END = datetime(2026, 11, 20, 0, 0, 0, tzinfo=timezone.utc)
WINDOW_DAYS = 60
WINDOW_START = WINDOW_END - timedelta(days=WINDOW_DAYS)
NAMESPACE = uuid.UUID("6f1c2b9e-3d4a-5e6f-8a7b-9c0d1e2f3a4b")
SITE = "https://shop.example.com"

HERE = os.path.dirname(os.path.abspath(__file__))
EVENTS_PATH = os.path.join(HERE, "web-events.jsonl")
EXPECTED_PATH = os.path.join(HERE, "expected.json")
README_PATH = os.path.join(HERE, "README.md")
README_BEGIN = "<!-- expected:begin -->"
README_END = "<!-- expected:end -->"

# --------------------------------------------------------------------------- normalisation
# Mirrors schemas/src/identifier.rs (DEFAULT_BLOCKED_VALUES, is_junk, email and phone
# rules) for the identifier types this dataset uses.

BLOCKED_VALUES = {
    "", "null", "nil", "undefined", "anonymous", "none", "unknown", "n/a", "na", "nan",
    "0", "-1", "[object object]", "guest", "test", "00000000-0000-0000-0000-000000000000",
}
# The pipeline's default `default_phone_region` is empty: a phone number written
# without a country code (no leading + or 00) is rejected, not guessed.
DEFAULT_PHONE_REGION = None


def is_junk(lower):
    if lower in BLOCKED_VALUES:
        return True
    significant = [c for c in lower if c.isalnum()]
    return bool(significant) and all(c == "0" for c in significant)


EMAIL_RE = re.compile(r"^[a-z0-9!#$%&'*+\-/=?^_`{|}~.]{1,64}@[a-z0-9-]+(\.[a-z0-9-]+)+$")


def normalize(id_type, value):
    """Returns (normalised value, None) or (None, rejection reason)."""
    if value is None:
        return None, "missing"
    raw = str(value).strip()
    if not raw:
        return None, "empty"
    lower = raw.lower()
    if is_junk(lower):
        return None, "blocked_value"
    if id_type == "email":
        v = lower[len("mailto:"):] if lower.startswith("mailto:") else lower
        if not EMAIL_RE.match(v):
            return None, "invalid_email"
        return v, None
    if id_type == "phone":
        cleaned = "".join(c for c in raw if c not in " -().//")
        if cleaned.startswith("00"):
            cleaned = "+" + cleaned[2:]
        if not cleaned.startswith("+"):
            if DEFAULT_PHONE_REGION is None:
                return None, "phone_without_country_code"
        digits = cleaned[1:]
        if not digits.isdigit() or not 8 <= len(digits) <= 15:
            return None, "invalid_phone"
        return "+" + digits, None
    # user_id, anonymous_id: as sent (trimmed)
    return raw, None


def message_identifiers(msg):
    """[(type, raw value)] the resolver reads from one message."""
    out = []
    if "userId" in msg:
        out.append(("user_id", msg["userId"]))
    if "anonymousId" in msg:
        out.append(("anonymous_id", msg["anonymousId"]))
    if msg["type"] == "identify":
        traits = msg.get("traits") or {}
        if "email" in traits:
            out.append(("email", traits["email"]))
        if "phone" in traits:
            out.append(("phone", traits["phone"]))
    if msg["type"] == "alias" and "previousId" in msg:
        # In this dataset previousId is always the anonymousId of another device.
        out.append(("anonymous_id", msg["previousId"]))
    return out


class UnionFind:
    def __init__(self):
        self.parent = {}

    def add(self, x):
        self.parent.setdefault(x, x)

    def find(self, x):
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


# --------------------------------------------------------------------------- the story

FIRST = ["Ann", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jonas",
         "Kemi", "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tara",
         "Umar", "Vera", "Wei", "Xena", "Yusuf", "Zoe", "Aaron", "Bea", "Carl", "Dana"]
LAST = ["Lee", "Okafor", "Martin", "Garcia", "Schmidt", "Haddad", "Kim", "Tanaka", "Brown",
        "Berg", "Adeyemi", "Walsh", "Patel", "Fischer", "Ivanova", "Sharma", "Hughes",
        "Rossi", "Nguyen", "Singh", "Ali", "Novak", "Zhang", "Costa", "Demir", "Moreau",
        "Levi", "Jansen", "Olsen", "Reyes"]
# Valid numbers (checked against libphonenumber metadata) in the formats people type.
PHONES = ["+1 415-555-0123", "+1 (415) 555 0134", "+14155550145", "001 212 555 0156",
          "+44 20 7946 0958", "+49 30 901820", "+1 646-555-0178", "+33 1 23 45 67 89",
          "+61 2 5550 1234", "+1 312.555.0190", "+49 151 23456789"]
NATIONAL_PHONE = "(415) 555-0167"  # no country code: rejected without a default region
PLANS = ["free", "starter", "pro", "business"]
PRODUCTS = [
    {"product_id": "p-1001", "sku": "TEE-BLK-M", "name": "Logo Tee", "category": "Apparel", "price": 24.0},
    {"product_id": "p-1002", "sku": "HOOD-GRY-L", "name": "Zip Hoodie", "category": "Apparel", "price": 59.0},
    {"product_id": "p-1003", "sku": "MUG-WHT", "name": "Enamel Mug", "category": "Home", "price": 14.5},
    {"product_id": "p-1004", "sku": "BAG-CNV", "name": "Canvas Tote", "category": "Accessories", "price": 19.9},
    {"product_id": "p-1005", "sku": "CAP-NVY", "name": "Dad Cap", "category": "Accessories", "price": 22.0},
    {"product_id": "p-1006", "sku": "BOT-STL", "name": "Steel Bottle", "category": "Home", "price": 32.0},
]
PAGES = [("Home", "/", "Shop Example"), ("Pricing", "/pricing", "Pricing"),
         ("Blog", "/blog/10-gift-ideas", "10 gift ideas"), ("Catalog", "/catalog", "All products"),
         ("About", "/about", "About us"), ("Help", "/help/shipping", "Shipping")]
REFERRERS = ["", "https://www.google.com/", "https://news.ycombinator.com/",
             "https://www.instagram.com/", "https://t.co/abc123", "https://duckduckgo.com/"]
CAMPAIGNS = [
    {"name": "black_friday_2026", "source": "newsletter", "medium": "email"},
    {"name": "autumn_sale", "source": "instagram", "medium": "social"},
    {"name": "brand_search", "source": "google", "medium": "cpc"},
    {"name": "creator_collab", "source": "youtube", "medium": "video"},
]
USER_AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
]
CURRENCIES = ["USD", "USD", "USD", "EUR", "GBP"]
COMPANIES = ["Acme Corp", "Globex", "Initech", "Umbrella Health"]


def iso(ts):
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ts.microsecond // 1000)


class Device:
    def __init__(self, gen, key, n, mobile_app=False):
        self.anonymous_id = str(uuid.uuid5(NAMESPACE, "anon/%s/%d" % (key, n)))
        self.ip = "%s.%d" % (gen.rng.choice(["203.0.113", "198.51.100", "192.0.2"]),
                             gen.rng.randint(2, 254))
        self.user_agent = gen.rng.choice(USER_AGENTS)
        self.mobile_app = mobile_app
        self.user_id = None  # set once this device identified with a userId


class Generator:
    def __init__(self):
        self.rng = random.Random(SEED)
        self.messages = []  # (timestamp, customer key, message)
        self.order_no = 5000

    # ---- building blocks

    def base(self, key, seq, kind, device, ts):
        msg = {
            "type": kind,
            "messageId": str(uuid.uuid5(NAMESPACE, "msg/%s/%d" % (key, seq))),
        }
        if device is not None:
            msg["anonymousId"] = device.anonymous_id
            if device.user_id is not None:
                msg["userId"] = device.user_id
        msg["timestamp"] = iso(ts)
        if device is not None and device.mobile_app:
            msg["context"] = {
                "library": {"name": "analytics-ios", "version": "4.1.8"},
                "app": {"name": "Shop Example", "version": "3.2.0", "build": "320"},
                "device": {"type": "ios", "manufacturer": "Apple", "model": "iPhone16,1"},
                "os": {"name": "iOS", "version": "18.1"},
                "ip": device.ip,
                "locale": "en-US",
            }
        else:
            msg["context"] = {
                "library": {"name": "analytics.js", "version": "5.2.1"},
                "userAgent": device.user_agent if device else USER_AGENTS[1],
                "ip": device.ip if device else "192.0.2.1",
                "locale": "en-US",
            }
        return msg

    def page_ctx(self, msg, path, title, referrer, campaign=None):
        search = ""
        if campaign:
            search = "?utm_source=%s&utm_medium=%s&utm_campaign=%s" % (
                campaign["source"], campaign["medium"], campaign["name"])
            msg["context"]["campaign"] = dict(campaign)
        msg["context"]["page"] = {"path": path, "referrer": referrer, "search": search,
                                  "title": title, "url": SITE + path + search}
        if msg["type"] == "page":
            msg["properties"].update({"search": search, "url": SITE + path + search})

    def emit(self, cust, kind, device, **kw):
        cust["seq"] += 1
        ts = cust["clock"]
        msg = self.base(cust["key"], cust["seq"], kind, device, ts)
        rng = self.rng
        campaign = kw.get("campaign")
        if kind == "page":
            name, path, title = kw.get("page") or rng.choice(PAGES)
            referrer = kw.get("referrer", rng.choice(REFERRERS))
            msg["name"] = name
            msg["properties"] = {"path": path, "referrer": referrer, "title": title,
                                 "url": SITE + path}
            self.page_ctx(msg, path, title, referrer, campaign)
        elif kind == "screen":
            msg["name"] = kw.get("screen", rng.choice(["Home", "Product", "Cart", "Search"]))
            msg["properties"] = {"variation": rng.choice(["a", "b"])}
        elif kind == "track":
            msg["event"] = kw["event"]
            msg["properties"] = kw.get("properties", {})
            if not device.mobile_app:
                path = kw.get("path", "/catalog")
                self.page_ctx(msg, path, "Shop Example", "", campaign)
        elif kind == "identify":
            msg["traits"] = kw["traits"]
            if not device.mobile_app:
                self.page_ctx(msg, "/account", "Your account", "")
        elif kind == "group":
            msg["groupId"] = kw["group_id"]
            msg["traits"] = kw["traits"]
        elif kind == "alias":
            msg.pop("anonymousId", None)  # server-side alias: previousId is the only link
            msg["previousId"] = kw["previous_id"]
            msg["userId"] = kw["user_id"]
        self.messages.append((ts, cust["key"], msg))
        # advance the clock: seconds to minutes inside a visit
        cust["clock"] = ts + timedelta(seconds=rng.randint(8, 300),
                                       milliseconds=rng.randint(0, 999))
        return msg

    def new_visit(self, cust, min_hours=2, max_hours=60):
        cust["clock"] += timedelta(hours=self.rng.uniform(min_hours, max_hours))

    def browse(self, cust, device, n, campaign=None):
        """A visit of n events: pages, product views, maybe a cart."""
        rng = self.rng
        first = True
        for _ in range(n):
            c = campaign if first else None
            if device.mobile_app:
                self.emit(cust, "screen", device)
            elif first or rng.random() < 0.5:
                self.emit(cust, "page", device, campaign=c)
            else:
                p = rng.choice(PRODUCTS)
                event = rng.choice(["Product Viewed", "Product Viewed", "Product Added",
                                    "Products Searched"])
                props = {"product_id": p["product_id"], "sku": p["sku"], "name": p["name"],
                         "category": p["category"], "price": p["price"], "currency": "USD"}
                if event == "Products Searched":
                    props = {"query": p["category"].lower()}
                if event == "Product Added":
                    props["quantity"] = rng.randint(1, 3)
                self.emit(cust, "track", device, event=event, properties=props,
                          path="/products/%s" % p["product_id"], campaign=c)
            first = False

    def order(self, cust, device):
        rng = self.rng
        items = rng.sample(PRODUCTS, rng.randint(1, 3))
        currency = rng.choice(CURRENCIES)
        products = []
        for p in items:
            q = rng.randint(1, 2)
            products.append({"product_id": p["product_id"], "sku": p["sku"], "name": p["name"],
                             "category": p["category"], "price": p["price"], "quantity": q})
        revenue = round(sum(p["price"] * p["quantity"] for p in products), 2)
        self.order_no += 1
        self.emit(cust, "track", device, event="Checkout Started",
                  properties={"value": revenue, "currency": currency, "products": products},
                  path="/checkout")
        self.emit(cust, "track", device, event="Order Completed", path="/checkout/thank-you",
                  properties={"order_id": "ord_%d" % self.order_no, "total": revenue,
                              "revenue": revenue, "shipping": 4.95, "tax": 0.0,
                              "currency": currency, "products": products})

    def identify(self, cust, device, user_id, traits):
        device.user_id = user_id
        return self.emit(cust, "identify", device, traits=traits)

    # ---- customers

    def customer(self, i, story, extra):
        rng = self.rng
        first, last = FIRST[i], LAST[i]
        key = "c%02d-%s-%s" % (i + 1, first.lower(), last.lower())
        cust = {"key": key, "seq": 0, "story": story, "name": "%s %s" % (first, last),
                "clock": WINDOW_START + timedelta(days=rng.uniform(0.2, WINDOW_DAYS - 2),
                                                  seconds=rng.randint(0, 3600))}
        email = "%s.%s@%s" % (first.lower(), last.lower(),
                              rng.choice(["example.com", "example.org", "mail.example.net"]))
        user_id = "usr_%05d" % (10000 + i * 37)
        cust["email"], cust["user_id"] = email, user_id
        cust.update({k: v for k, v in extra.items() if v})
        if "email_variant" in cust:
            cust["email_variant"] = cust["email_variant"](email)
        d1 = Device(self, key, 1)
        campaign = rng.choice(CAMPAIGNS) if rng.random() < 0.5 else None

        if story == "anonymous":
            mobile = i % 2 == 0
            d1.mobile_app = mobile
            for _ in range(rng.randint(1, 3)):
                self.browse(cust, d1, rng.randint(2, 4), campaign)
                campaign = None
                self.new_visit(cust)
            return cust

        if story == "junk_user_id":
            # A buggy integration sends userId "undefined": the three visitors must not merge.
            self.browse(cust, d1, rng.randint(2, 4), campaign)
            d1.user_id = "undefined"
            self.emit(cust, "identify", d1,
                      traits={"name": cust["name"], "email": email, "plan": "free"})
            self.browse(cust, d1, rng.randint(1, 3))
            return cust

        # standard / two_devices / alias: anonymous browsing, then identify with userId.
        for _ in range(rng.randint(1, 2)):
            self.browse(cust, d1, rng.randint(2, 4), campaign)
            campaign = None
            self.new_visit(cust)
        traits = {"name": cust["name"], "email": email, "plan": rng.choice(PLANS),
                  "createdAt": iso(cust["clock"])}  # kept equal to the identify timestamp
        if cust.get("phone"):
            traits["phone"] = cust["phone"]
        self.identify(cust, d1, user_id, traits)
        self.browse(cust, d1, rng.randint(1, 3))
        if rng.random() < 0.6:
            self.order(cust, d1)
        if cust.get("company"):
            self.emit(cust, "group", d1, group_id="grp_%s" % cust["company"].lower().replace(" ", "-"),
                      traits={"name": cust["company"], "plan": "business",
                              "industry": "Retail", "employees": rng.choice([12, 80, 450])})
        self.new_visit(cust)
        self.browse(cust, d1, rng.randint(2, 3))

        if story == "two_devices":
            # Second browser: anonymous, then identify carrying only the email, written
            # with different case and whitespace. Must merge into the same profile.
            d2 = Device(self, key, 2)
            self.new_visit(cust, 1, 48)
            self.browse(cust, d2, rng.randint(2, 3))
            self.emit(cust, "identify", d2, traits={"email": cust["email_variant"]})
            self.browse(cust, d2, rng.randint(1, 2))
            if rng.random() < 0.5:
                self.order(cust, d2)
        elif story == "alias":
            # Mobile app install: anonymous screens, then a server-side alias call
            # (previousId = app anonymousId, userId) is the only link.
            d2 = Device(self, key, 2, mobile_app=True)
            self.new_visit(cust, 1, 48)
            self.browse(cust, d2, rng.randint(3, 4))
            self.emit(cust, "alias", None, previous_id=d2.anonymous_id, user_id=user_id)
        return cust

    def fit_window(self, start):
        """Moves a customer's messages earlier if they run past the window end."""
        last = max(m[0] for m in self.messages[start:])
        limit = WINDOW_END - timedelta(hours=self.rng.uniform(1, 30))
        if last <= limit:
            return
        shift = last - limit
        for j in range(start, len(self.messages)):
            ts, key, msg = self.messages[j]
            ts -= shift
            assert ts >= WINDOW_START, "customer timeline longer than the window"
            msg["timestamp"] = iso(ts)
            if "createdAt" in msg.get("traits", {}):
                msg["traits"]["createdAt"] = msg["timestamp"]
            self.messages[j] = (ts, key, msg)

    def build(self):
        stories = (["standard"] * 17 + ["two_devices"] * 5 + ["alias"] +
                   ["anonymous"] * 4 + ["junk_user_id"] * 3)
        # Deterministic shuffle so the stories are spread over the roster.
        self.rng.shuffle(stories)
        customers = []
        phones = iter(PHONES)
        companies = iter(COMPANIES)
        variants = iter([lambda e: " " + e[0].upper() + e[1:].replace("@e", "@E"),
                         lambda e: e.upper(),
                         lambda e: e.title() + "  ",
                         lambda e: "\t" + e,
                         lambda e: " " + e.upper() + " "])
        national_done = False
        for i, story in enumerate(stories):
            extra = {}
            if story in ("standard", "two_devices", "alias"):
                r = self.rng.random()
                if r < 0.45:
                    extra["phone"] = next(phones, None)
                elif r < 0.55 and not national_done:
                    extra["phone"] = NATIONAL_PHONE
                    national_done = True
                if story == "standard" and self.rng.random() < 0.25:
                    extra["company"] = next(companies, None)
            if story == "two_devices":
                extra["email_variant"] = next(variants)
            start = len(self.messages)
            customers.append(self.customer(i, story, extra))
            self.fit_window(start)
        return customers


# --------------------------------------------------------------------------- expectation


def expected_outcome(messages):
    """Union-find over the identifiers each message carries."""
    uf = UnionFind()
    rejected = Counter()
    msg_nodes = []
    for _, _, msg in messages:
        nodes = []
        for t, v in message_identifiers(msg):
            nv, reason = normalize(t, v)
            if nv is None:
                rejected[(t, str(v), reason)] += 1
                continue
            node = "%s:%s" % (t, nv)
            uf.add(node)
            nodes.append(node)
        for a in nodes[1:]:
            uf.union(nodes[0], a)
        msg_nodes.append(nodes)
    groups = {}
    for node in uf.parent:
        groups.setdefault(uf.find(node), set()).add(node)
    return uf, groups, msg_nodes, rejected


def generate():
    gen = Generator()
    customers = gen.build()
    messages = sorted(gen.messages, key=lambda m: (m[0], m[2]["messageId"]))
    for ts, _, _ in messages:
        assert WINDOW_START <= ts < WINDOW_END, ts

    uf, groups, msg_nodes, rejected = expected_outcome(messages)

    # Attribute every message to its component; check the story came out as intended.
    by_root_events = Counter()
    by_root_types = {}
    root_keys = {}
    for (ts, key, msg), nodes in zip(messages, msg_nodes):
        assert nodes, "message %s carries no usable identifier" % msg["messageId"]
        root = uf.find(nodes[0])
        by_root_events[root] += 1
        by_root_types.setdefault(root, Counter())[msg["type"]] += 1
        root_keys.setdefault(root, set()).add(key)
    for root, keys in root_keys.items():
        assert len(keys) == 1, "generator bug: customers %s merged" % sorted(keys)
    assert len(groups) == len(customers), (len(groups), len(customers))

    cust_by_key = {c["key"]: c for c in customers}
    profiles = []
    for root, nodes in groups.items():
        key = next(iter(root_keys[root]))
        c = cust_by_key[key]
        profiles.append({
            "key": key,
            "story": c["story"],
            "name": c["name"],
            "events": by_root_events[root],
            "events_by_type": dict(sorted(by_root_types[root].items())),
            "identifiers": sorted(nodes),
        })
    profiles.sort(key=lambda p: p["key"])

    stories = Counter(p["story"] for p in profiles)
    expected = {
        "dataset": "deploy/sample/web-events.jsonl",
        "generator": "deploy/sample/generate.py",
        "seed": SEED,
        "window": {"from": iso(WINDOW_START), "to": iso(WINDOW_END)},
        "events": len(messages),
        "events_by_type": dict(sorted(Counter(m[2]["type"] for m in messages).items())),
        "customers": len(profiles),
        "customers_by_story": dict(sorted(stories.items())),
        "normalisation": {
            "email": "trimmed, lower-cased",
            "phone": "E.164; numbers without a country code are rejected "
                     "(default_phone_region empty)",
            "user_id": "as sent (trimmed)",
            "anonymous_id": "as sent (trimmed)",
            "alias": "previousId (an anonymousId here) linked to userId",
            "blocked_values": sorted(BLOCKED_VALUES) + ["all-zero values"],
        },
        "rejected_identifiers": [
            {"type": t, "value": v, "reason": r, "messages": n}
            for (t, v, r), n in sorted(rejected.items())
        ],
        "profiles": profiles,
    }
    lines = [json.dumps(m[2], separators=(",", ":"), ensure_ascii=False) for m in messages]
    return "\n".join(lines) + "\n", json.dumps(expected, indent=2, ensure_ascii=False) + "\n", expected


def readme_section(expected):
    """The README's expected-outcome section (between the markers)."""
    out = [README_BEGIN, "## Expected outcome (written by generate.py)", ""]
    out.append("- messages: **%d** (%s)" % (expected["events"], ", ".join(
        "%s %d" % kv for kv in expected["events_by_type"].items())))
    out.append("- distinct unified customers: **%d** (%s)" % (expected["customers"], ", ".join(
        "%s %d" % kv for kv in expected["customers_by_story"].items())))
    for r in expected["rejected_identifiers"]:
        out.append("- rejected: `%s` `%s` (%s) in %d messages"
                   % (r["type"], r["value"], r["reason"], r["messages"]))
    out += ["", "| customer | story | messages | identifiers |", "| --- | --- | --- | --- |"]
    for p in expected["profiles"]:
        out.append("| %s | %s | %d | %s |" % (p["key"], p["story"], p["events"],
                                             "<br>".join("`%s`" % i for i in p["identifiers"])))
    out.append(README_END)
    return "\n".join(out)


def render_readme(expected):
    with open(README_PATH, encoding="utf-8") as f:
        text = f.read()
    a, b = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    return text[:a] + readme_section(expected) + text[b:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 if the files on disk differ")
    args = ap.parse_args()
    events_text, expected_text, expected = generate()
    readme_text = render_readme(expected)
    outputs = ((EVENTS_PATH, events_text), (EXPECTED_PATH, expected_text),
               (README_PATH, readme_text))
    if args.check:
        ok = True
        for path, text in outputs:
            try:
                with open(path, encoding="utf-8") as f:
                    same = f.read() == text
            except FileNotFoundError:
                same = False
            if not same:
                print("out of date: %s" % path, file=sys.stderr)
                ok = False
        if not ok:
            return 1
    else:
        for path, text in outputs:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    print("events: %d %s" % (expected["events"], expected["events_by_type"]))
    print("expected customers: %d %s" % (expected["customers"], expected["customers_by_story"]))
    for r in expected["rejected_identifiers"]:
        print("rejected: %s %r (%s) in %d messages" % (r["type"], r["value"], r["reason"],
                                                        r["messages"]))
    for p in expected["profiles"]:
        print("%-22s %-13s %3d events  %s" % (p["key"], p["story"], p["events"],
                                             ", ".join(p["identifiers"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
