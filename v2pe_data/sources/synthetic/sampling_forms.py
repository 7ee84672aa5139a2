"""Drawing form specs (`spec.FormSpec`): sections of labelled fields and choices, filled with values of
the kinds below, sized to the page (see `sampling.py` for the other kinds and how plans meet rendering).
"""

from __future__ import annotations

import datetime as dt
import random

from . import text as tx
from .layout import line_height, page_metrics, page_size
from .spec import Choice, Field, FormSpec, Section


# Value kinds a form field can hold; each is drawn by _field_value.
_MAKES = {"Toyota": ("Corolla", "RAV4", "Camry"), "Ford": ("Focus", "Ranger", "Escape"),
          "Volkswagen": ("Golf", "Passat", "Tiguan"), "Honda": ("Civic", "Accord", "CR-V"),
          "Kia": ("Rio", "Sportage", "Niro"), "Skoda": ("Octavia", "Fabia", "Kodiaq")}
_COLOURS = ("White", "Black", "Silver", "Blue", "Red", "Grey", "Green")
_EQUIPMENT = ("Laptop", "Projector", "Tablet", "Camera kit", "Conference phone", "Label printer", "Drone")
_INSURERS = ("Harbor Health", "Summit Mutual", "Crescent Care", "Meridian Life", "Oakmont Assurance")
_ALLERGIES = ("None known", "Penicillin", "Peanuts", "Latex", "Pollen", "Shellfish")
_PLATE_LETTERS = "ABCDEFGHJKLMNPRSTVWXYZ"
_PURPOSES = ("Client visit and contract review", "Annual sales conference", "Supplier audit",
             "Trade fair attendance", "Site inspection", "Team training week", "Product launch event")

# (form name, department, sections: (heading, ((label, value kind, wide), ...)), choice: (label, options))
_FORMS = (
    ("Leave Request", "Human Resources",
     (("Employee details", (("Full name", "self", False), ("Employee ID", "emp_id", False),
                            ("Department", "dept", False), ("Line manager", "name", False),
                            ("Work email", "email", True))),
      ("Leave details", (("First day of leave", "date", False), ("Last day of leave", "date_after", False),
                         ("Working days requested", "days", False), ("Cover arranged with", "name", False)))),
     ("Type of leave", ("Annual", "Sick", "Parental", "Unpaid"))),
    ("Expense Claim", "Finance",
     (("Claimant", (("Full name", "self", False), ("Employee ID", "emp_id", False),
                    ("Cost centre", "cost_centre", False), ("Phone", "phone", False))),
      ("Expense summary", (("Purpose of expense", "purpose", True), ("Date incurred", "date_before", False),
                           ("Amount claimed (USD)", "money", False), ("Advance received (USD)", "money", False),
                           ("Receipts attached", "count", False)))),
     ("Reimbursement method", ("Bank transfer", "Payroll", "Cheque"))),
    ("Vehicle Registration Application", "Motor Vehicles Office",
     (("Registered owner", (("Full name", "self", False), ("Date of birth", "dob", False),
                            ("Home address", "address", True), ("Phone", "phone", False))),
      ("Vehicle", (("Make", "make", False), ("Model", "model", False), ("Model year", "year", False),
                   ("Colour", "colour", False), ("VIN", "vin", False), ("Plate number", "plate", False)))),
     ("Registration type", ("New", "Renewal", "Transfer"))),
    ("Membership Application", "Member Services",
     (("Applicant", (("Full name", "self", False), ("Date of birth", "dob", False),
                     ("Email", "email", True), ("Phone", "phone", False), ("Home address", "address", True))),
      ("Membership", (("Membership number", "member_no", False), ("Start date", "date", False),
                      ("Referred by", "name", False)))),
     ("Membership level", ("Basic", "Standard", "Premium", "Family"))),
    ("Equipment Loan Request", "Facilities",
     (("Borrower", (("Full name", "self", False), ("Employee ID", "emp_id", False),
                    ("Department", "dept", False), ("Phone", "phone", False))),
      ("Equipment", (("Item", "equipment", False), ("Asset tag", "asset_tag", False),
                     ("Loan start", "date", False), ("Return by", "date_after", False),
                     ("Purpose", "purpose", True)))),
     ("Condition on issue", ("New", "Good", "Fair"))),
    ("Change of Address Notification", "Customer Records",
     (("Account", (("Account holder", "self", False), ("Account number", "account_no", False),
                   ("Email", "email", True))),
      ("Addresses", (("Previous address", "address", True), ("New address", "address", True),
                     ("Effective date", "date", False)))),
     ("Contact preference", ("Email", "Phone", "Post"))),
    ("Patient Registration", "Outpatient Clinic",
     (("Patient", (("Full name", "self", False), ("Date of birth", "dob", False), ("Phone", "phone", False),
                   ("Home address", "address", True))),
      ("Medical", (("Primary physician", "doctor", False), ("Insurance provider", "insurer", False),
                   ("Policy number", "policy", False), ("Allergies", "allergy", False)))),
     ("Preferred appointment time", ("Morning", "Afternoon", "Evening"))),
)


def _field_value(rng: random.Random, kind: str, who: str, org: str, dates: list[dt.date], date_style: str,
                 make: list[str]) -> tuple[str, str]:
    """(printed value, ISO date or "") for one form field.

    `dates` starts with the day the form was signed; planned dates follow it, a "date_after" follows the
    previous date (a leave never ends before it starts) and a "date_before" precedes the signature.
    """
    if kind in ("date", "date_after", "date_before", "dob"):
        if kind == "dob":
            d = tx.date_between(rng, 1950, 2003)
        elif kind == "date_before":  # something that happened before the form was filled in
            d = dates[0] - dt.timedelta(days=rng.randint(1, 30))
        else:
            d = dates[-1] + dt.timedelta(days=rng.randint(1, 21) if kind == "date_after" else rng.randint(3, 60))
            dates.append(d)
        return tx.format_date(d, date_style), d.isoformat()
    if kind == "make":  # the model field below must belong to this make
        make.append(rng.choice(sorted(_MAKES)))
        return make[-1], ""
    if kind == "model":
        return rng.choice(_MAKES[make[-1] if make else "Ford"]), ""
    simple = {
        "self": lambda: who,
        "name": lambda: tx.person(rng),
        "emp_id": lambda: f"E-{rng.randint(10000, 99999)}",
        "dept": lambda: rng.choice(tx.DEPARTMENTS),
        "email": lambda: tx.email(who, org),
        "days": lambda: str(rng.randint(1, 15)),
        "count": lambda: str(rng.randint(1, 12)),
        "cost_centre": lambda: f"CC-{rng.randint(100, 999)}",
        "phone": lambda: tx.phone(rng),
        "purpose": lambda: rng.choice(_PURPOSES),
        "money": lambda: tx.fixed(rng.randint(2000, 250000), 2),
        "address": lambda: ", ".join(tx.address(rng)),
        "year": lambda: str(rng.randint(2008, 2024)),
        "colour": lambda: rng.choice(_COLOURS),
        "vin": lambda: "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ0123456789") for _ in range(17)),
        "plate": lambda: (rng.choice(_PLATE_LETTERS) + rng.choice(_PLATE_LETTERS)
                          + f"{rng.randint(100, 999)} {rng.randint(10, 99)}"),
        "member_no": lambda: f"M-{rng.randint(100000, 999999)}",
        "equipment": lambda: rng.choice(_EQUIPMENT),
        "asset_tag": lambda: f"AT-{rng.randint(10000, 99999)}",
        "account_no": lambda: f"{rng.randint(10, 99)}-{rng.randint(1000000, 9999999)}",
        "doctor": lambda: f"Dr. {rng.choice(tx.LAST_NAMES)}",
        "insurer": lambda: rng.choice(_INSURERS),
        "policy": lambda: f"P{rng.randint(1000000, 9999999)}",
        "allergy": lambda: rng.choice(_ALLERGIES),
    }
    return simple[kind](), ""


def form_header_height(width: int, height: int) -> int:
    m = page_metrics(width, height)
    return m.margin + line_height(m.h2) + line_height(m.h1) + 2 * line_height(m.small) + m.line


def form_section_height(width: int, height: int, section: Section) -> int:
    m = page_metrics(width, height)
    rows = 0
    half = 0
    for f in section.fields:
        if f.wide:
            rows += 1 + half
            half = 0
        else:
            half += 1
            if half == 2:
                rows += 1
                half = 0
    rows += half
    return m.row + round(m.body * 0.6) + rows * form_field_height(m.small, m.body)


def form_field_height(small: int, body: int) -> int:
    return line_height(small) + round(body * 1.9) + round(body * 0.7)


def form_tail_height(width: int, height: int) -> int:
    """Choice line, signature block and footer."""
    m = page_metrics(width, height)
    return 2 * m.line + 4 * m.line + line_height(m.small) + m.margin


def draw_form(rng: random.Random, code: str) -> FormSpec:
    width, height = page_size(rng)
    name, dept, section_defs, (choice_label, options) = rng.choice(_FORMS)
    org = tx.company(rng)
    who = tx.person(rng)
    date_style = rng.choice(tx.DATE_STYLES)
    year = rng.randint(2010, 2024)
    signed = tx.date_between(rng, year, year)
    dates = [signed]
    make: list[str] = []
    sections = []
    budget = height - form_header_height(width, height) - form_tail_height(width, height)
    for heading, defs in section_defs:
        fields = []
        for label, kind, wide in defs:
            value, iso = _field_value(rng, kind, who, org, dates, date_style, make)
            fields.append(Field(label, value, wide, iso))
        section = Section(heading, tuple(fields))
        # Short pages drop trailing fields, then trailing sections, rather than crowd the page.
        while len(section.fields) > 1 and form_section_height(width, height, section) > budget:
            section = Section(heading, section.fields[:-1])
        if form_section_height(width, height, section) > budget:
            break
        budget -= form_section_height(width, height, section)
        sections.append(section)
    number = f"F-{code}"
    return FormSpec(
        width=width, height=height, code=code, title=f"Form {number}: {name} ({org})", number=number,
        organisation=org, form_name=name, department=dept,
        revision=f"Rev. {rng.randint(2005, year)}-{rng.randint(1, 12):02d}",
        instructions=f"Please complete all fields in block capitals and return this form to {dept}.",
        sections=tuple(sections), choice=Choice(choice_label, options, rng.randrange(len(options))),
        signer=who, signed=signed, date_style=date_style,
    )
