"""Vocabulary, prose and number/date formatting for generated documents.

Everything is plain ASCII: Pillow's bundled Aileron font has no glyphs for dashes, bullets or currency
signs other than "$", and a missing glyph would print as a box the question cannot refer to.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
MONTHS_SHORT = tuple(m[:3] for m in MONTHS)

FIRST_NAMES = (
    "Amelia", "Arjun", "Beatriz", "Carlos", "Chen", "Dana", "Dmitri", "Elena", "Fatima", "Felix", "Grace",
    "Hana", "Ibrahim", "Isla", "Jonas", "Julia", "Kenji", "Laila", "Lucas", "Maya", "Mateo", "Nadia",
    "Noah", "Olga", "Omar", "Priya", "Rafael", "Rosa", "Samuel", "Sofia", "Tomas", "Valeria", "Wei",
    "Yusuf", "Zara", "Anton", "Clara", "Erik", "Ines", "Marco",
)
LAST_NAMES = (
    "Adeyemi", "Almeida", "Becker", "Brennan", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia",
    "Haddad", "Hansen", "Ivanova", "Jensen", "Kowalski", "Larsen", "Lindqvist", "Moreau", "Nakamura",
    "Novak", "Okafor", "Olsen", "Patel", "Petrov", "Quinn", "Rossi", "Santos", "Schmidt", "Silva",
    "Tanaka", "Turner", "Varga", "Weber", "Williams", "Yamamoto", "Zhang", "Kim", "Murphy", "Costa",
)
_COMPANY_HEADS = (
    "Northwind", "Bluefield", "Crescent", "Ironbridge", "Harbor", "Summit", "Pinecrest", "Redstone",
    "Silverline", "Oakmont", "Meridian", "Lakeside", "Granite", "Brightwater", "Kestrel", "Alder",
    "Copperleaf", "Evergreen", "Foxhollow", "Highgate", "Juniper", "Larkspur", "Maplewood", "Riverbend",
    "Stonegate", "Tidewater", "Westbrook", "Whitecliff", "Ashford", "Cobalt", "Driftwood", "Fairhaven",
)
_COMPANY_TAILS = (
    "Traders", "Logistics", "Foods", "Engineering", "Supplies", "Systems", "Holdings", "Labs", "Textiles",
    "Hardware", "Consulting", "Farms", "Analytics", "Pharma", "Energy", "Robotics", "Outfitters", "Media",
)
_COMPANY_SUFFIXES = ("Ltd.", "Inc.", "LLC", "Co.", "GmbH", "S.A.", "")
STREETS = (
    "Oak", "Maple", "Cedar", "Elm", "Harbor", "Mill", "Station", "Church", "Market", "Bridge", "Park",
    "Lake", "Hill", "River", "Garden", "Willow", "Chestnut", "King", "Queen", "Victoria",
)
STREET_KINDS = ("Street", "Avenue", "Road", "Lane", "Boulevard", "Way", "Drive", "Place")
CITIES = (
    "Springfield", "Riverton", "Fairview", "Greenville", "Bristol", "Kingston", "Ashland", "Milton",
    "Clayton", "Dover", "Franklin", "Georgetown", "Hudson", "Lexington", "Madison", "Newport", "Oxford",
    "Salem", "Winchester", "Chester", "Arlington", "Burlington", "Clinton", "Marion",
)
REGIONS_POSTAL = ("CA", "NY", "TX", "WA", "OR", "IL", "MA", "CO", "GA", "OH", "ON", "BC")
DEPARTMENTS = (
    "Finance", "Human Resources", "Operations", "Marketing", "Engineering", "Sales", "Procurement",
    "Customer Support", "Legal", "Research", "Logistics", "Facilities",
)

# (description, lowest unit price, highest unit price) in cents; descriptions stay short so an invoice
# row never needs wrapping.
PRODUCTS: tuple[tuple[str, int, int], ...] = (
    ("Hex bolts M8, box of 100", 850, 2400),
    ("Ergonomic office chair", 12900, 48900),
    ("A4 copy paper, 5 reams", 1899, 3499),
    ("Consulting services (hour)", 9500, 24000),
    ("USB-C docking station", 8900, 24900),
    ("LED panel light 60x60", 3200, 8900),
    ("Printer toner cartridge", 4500, 14900),
    ("Safety gloves (pair)", 350, 1800),
    ("24-port network switch", 15900, 59900),
    ("Cloud hosting (month)", 2900, 49900),
    ("Shipping and handling", 1200, 9500),
    ("Standing desk frame", 21900, 64900),
    ("Wireless keyboard", 2900, 9900),
    ("27-inch monitor", 17900, 52900),
    ("Cat6 patch cable, 3 m", 299, 1299),
    ("Whiteboard markers, 12 pack", 899, 2199),
    ("Software license (seat)", 4900, 39900),
    ("On-site installation", 15000, 95000),
    ("Annual support contract", 45000, 250000),
    ("Stainless steel shelving", 8900, 32900),
    ("Industrial floor cleaner, 5 L", 1900, 5900),
    ("First aid kit", 2400, 8900),
    ("Pallet jack rental (day)", 3500, 12000),
    ("Corrugated boxes, bundle of 25", 1500, 4500),
    ("Laser level", 6900, 29900),
    ("Cordless drill kit", 8900, 24900),
    ("Coffee beans, 1 kg", 1400, 3900),
    ("Training workshop (day)", 60000, 240000),
    ("Translation services (page)", 2500, 7500),
    ("Solar panel 400 W", 18900, 42900),
    ("Hydraulic hose assembly", 2900, 11900),
    ("Thermal label rolls, 10 pack", 2900, 7900),
    ("Graphic design (hour)", 6000, 15000),
    ("Forklift battery service", 25000, 89000),
    ("Air filter replacement", 1900, 6900),
    ("Security camera, outdoor", 7900, 29900),
)

REGIONS = ("North America", "South America", "Europe", "Africa", "Middle East", "South Asia", "East Asia",
           "Oceania", "Central America", "Caribbean")
CHANNELS = ("Organic search", "Paid search", "Email", "Social media", "Referral", "Direct", "Display ads",
            "Affiliates")
ENERGY_SOURCES = ("Coal", "Natural gas", "Nuclear", "Hydro", "Wind", "Solar", "Biomass", "Geothermal")
VENDORS = ("Aster", "Borealis", "Cirrus", "Dynamo", "Echo", "Fathom", "Galena", "Helix", "Ion", "Juno")
WARDS = ("Cardiology", "Oncology", "Pediatrics", "Orthopedics", "Neurology", "Maternity", "Emergency",
         "Geriatrics", "Surgery")
CROPS = ("Wheat", "Maize", "Barley", "Soybeans", "Rice", "Oats", "Rapeseed", "Potatoes", "Sugar beet")
PRODUCT_LINES = ("Home audio", "Wearables", "Smart lighting", "Kitchen appliances", "Laptops", "Tablets",
                 "Cameras", "Accessories", "Gaming", "Networking")
SITES = tuple(f"{c} site" for c in ("Bristol", "Kingston", "Dover", "Oxford", "Salem", "Madison", "Hudson",
                                      "Newport", "Clayton", "Milton"))


@dataclass(frozen=True, slots=True)
class Topic:
    """A measured quantity broken down by category: the content of one chart or data table."""

    measure: str  # lower-case noun phrase: "coffee exports"
    by: str  # what the categories are: "region"
    categories: tuple[str, ...]
    unit: str  # shown on axes and in footnotes: "thousand tonnes"
    lo: int  # value range, in display units
    hi: int
    decimals: int = 0


TOPICS: tuple[Topic, ...] = (
    Topic("coffee exports", "region", REGIONS, "thousand tonnes", 40, 950),
    Topic("website visits", "channel", CHANNELS, "thousand visits", 12, 880),
    Topic("electricity generation", "source", ENERGY_SOURCES, "TWh", 3, 420, 1),
    Topic("smartphone shipments", "vendor", VENDORS, "million units", 1, 95, 1),
    Topic("hospital admissions", "ward", WARDS, "patients", 120, 4800),
    Topic("average yield", "crop", CROPS, "tonnes per hectare", 1, 12, 2),
    Topic("net sales", "product line", PRODUCT_LINES, "million USD", 5, 640, 1),
    Topic("staff headcount", "department", DEPARTMENTS, "employees", 8, 950),
    Topic("water consumption", "site", SITES, "thousand m3", 20, 760),
    Topic("tourist arrivals", "region", REGIONS, "thousand visitors", 60, 9800),
    Topic("support tickets", "product line", PRODUCT_LINES, "tickets", 140, 9600),
    Topic("carbon emissions", "site", SITES, "kt CO2e", 2, 310, 1),
)

# Prose is assembled from these parts: plausible business register, never claims about real entities.
_OPENERS = ("During the period,", "In line with the plan,", "As noted in the previous report,", "Overall,",
            "At the same time,", "Looking ahead,", "In addition,", "Despite a slow start,", "Notably,",
            "Compared with last year,", "For the remainder of the year,", "As expected,")
_SUBJECTS = ("the sales team", "management", "the operations group", "our regional partners",
             "the finance office", "the procurement team", "customer support", "the product group",
             "the logistics unit", "the board", "the marketing department", "the engineering team")
_VERBS = ("focused on", "reviewed", "improved", "expanded", "reduced", "streamlined", "monitored",
          "prioritised", "renegotiated", "consolidated", "invested in", "reorganised")
_OBJECTS = ("inventory levels", "delivery times", "the onboarding process", "supplier contracts",
            "marketing spend", "service quality", "warehouse capacity", "payment terms", "staff training",
            "the product roadmap", "energy costs", "key accounts", "the returns process", "data reporting")
_TAILS = ("across all regions", "ahead of schedule", "despite higher input costs",
          "in response to customer feedback", "with measurable results", "within the approved budget",
          "as part of the cost programme", "to support future growth", "while keeping headcount stable",
          "in close cooperation with suppliers", "following the audit recommendations")


def sentence(rng: random.Random) -> str:
    words = [rng.choice(part) for part in (_OPENERS, _SUBJECTS, _VERBS, _OBJECTS, _TAILS)]
    s = " ".join(words) + "."
    return s[0].upper() + s[1:]


def paragraph(rng: random.Random, n_sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(n_sentences))


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def company(rng: random.Random) -> str:
    suffix = rng.choice(_COMPANY_SUFFIXES)
    name = f"{rng.choice(_COMPANY_HEADS)} {rng.choice(_COMPANY_TAILS)}"
    return f"{name} {suffix}" if suffix else name


def address(rng: random.Random) -> tuple[str, str]:
    street = f"{rng.randint(1, 2999)} {rng.choice(STREETS)} {rng.choice(STREET_KINDS)}"
    city = f"{rng.choice(CITIES)}, {rng.choice(REGIONS_POSTAL)} {rng.randint(10000, 99999)}"
    return street, city


def phone(rng: random.Random) -> str:
    return f"+1 {rng.randint(201, 989)}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"


def email(name: str, org: str) -> str:
    first, last = name.lower().split(" ", 1)
    domain = org.split(" ")[0].lower()
    return f"{first}.{last}@{domain}.example"


def date_between(rng: random.Random, first_year: int, last_year: int) -> dt.date:
    # Day <= 28 keeps every (year, month) valid without a calendar lookup.
    return dt.date(rng.randint(first_year, last_year), rng.randint(1, 12), rng.randint(1, 28))


DATE_STYLES = ("iso", "long", "day_month")


def format_date(d: dt.date, style: str) -> str:
    if style == "iso":
        return d.isoformat()
    if style == "long":
        return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"
    if style == "day_month":
        return f"{d.day} {MONTHS_SHORT[d.month - 1]} {d.year}"
    raise ValueError(f"unknown date style {style!r}")


def fixed(value: int, decimals: int, grouping: bool = True) -> str:
    """Format an integer count of 10**-decimals units: fixed(123450, 2) == "1,234.50".

    Values are kept as scaled integers end to end, so a printed total is exactly the sum of printed parts.
    """
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**decimals)
    head = f"{whole:,}" if grouping else str(whole)
    return f"{sign}{head}.{frac:0{decimals}d}" if decimals else f"{sign}{head}"


def number_answers(value: int, decimals: int, unit: str = "", prefix: str = "") -> tuple[str, ...]:
    """The printed form first, then forms a reader might reasonably write (no grouping, with unit)."""
    shown = fixed(value, decimals)
    forms = [shown, fixed(value, decimals, grouping=False)]
    if prefix:
        forms.append(f"{prefix}{shown}")
    if unit:
        forms.append(f"{shown} {unit}")
    return unique(forms)


def unique(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def distinct_values(rng: random.Random, n: int, lo: int, hi: int) -> list[int]:
    """n distinct integers in [lo, hi], so "which is highest" never has two right answers."""
    if hi - lo + 1 < n:
        hi = lo + n - 1
    return rng.sample(range(lo, hi + 1), n)
