"""Telecom domain: the carrier's tools (customers, lines, plans, bills), written from main_policy.md.

Tables (db.toml's arrays keyed by id): `plans`, `devices`, `lines`, `customers`, `bills`; the customer's side lives in
the `user` table (see `device.py`): their phone and their surroundings (who they are, whether they are abroad,
payment requests they received). The phone reads the carrier's tables (is the line active, roaming enabled, over its
data limit), which is why both sides share one database.

Policy rules the tools enforce: lines and bills must belong to the customer, refuels are at most 2 GB, a customer has
at most one bill awaiting payment, resuming needs a suspended line. Rules the agent must follow itself (check that a
bill is overdue before requesting payment, never lift a suspension whose contract has ended) are graded by outcome.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestra.envs.tau.domains import Db, Domain, Tables, ToolError, keyed, read_data_file, round_usd
from orchestra.envs.tau.domains.telecom import device, setup

TODAY = "2025-02-25"
"""The policy's current date."""
MAX_REFUEL_GB = 2.0
_ID_TABLES = {"C": "customers", "L": "lines", "D": "devices", "B": "bills", "P": "plans"}


def load(folder: Path) -> Tables:
    data = read_data_file(folder, "db")
    if data is None:
        raise ToolError(f"no db.json or db.toml in {folder}")
    tables: Tables = {name: keyed(data.get(name, []), field) for name, field in (
        ("plans", "plan_id"), ("devices", "device_id"), ("lines", "line_id"), ("customers", "customer_id"),
        ("bills", "bill_id"))}
    tables.update(device.initial_tables(read_data_file(folder, "user_db") or {}))
    return tables


# ---- read tools -------------------------------------------------------------------------------------------------

def get_customer_by_phone(db: Db, phone_number: str) -> dict[str, Any]:
    """Find a customer by their contact phone number or the phone number of one of their lines.

    Args:
        phone_number: The phone number, e.g. "555-123-2002".
    """
    for customer in db.table("customers").values():
        numbers = {customer["phone_number"]} | {
            db.get("lines", lid)["phone_number"] for lid in customer["line_ids"] if db.find("lines", lid)}
        if phone_number.strip() in numbers:
            return customer
    raise ToolError(f"no customer with phone number {phone_number!r}")


def get_customer_by_id(db: Db, customer_id: str) -> dict[str, Any]:
    """Get a customer's profile by customer id.

    Args:
        customer_id: The customer id, e.g. "C1001".
    """
    return db.get("customers", customer_id, "customer")


def get_customer_by_name(db: Db, full_name: str, dob: str) -> dict[str, Any]:
    """Find a customer by full name and date of birth (both are required for verification).

    Args:
        full_name: The customer's full name, e.g. "John Smith".
        dob: Date of birth as YYYY-MM-DD, e.g. "1985-06-15".
    """
    for customer in db.table("customers").values():
        if customer["full_name"].lower() == full_name.strip().lower() and customer["date_of_birth"] == dob.strip():
            return customer
    raise ToolError(f"no customer named {full_name!r} born {dob}")


def get_details_by_id(db: Db, id: str) -> dict[str, Any]:
    """Get any record by its id: a customer (C...), line (L...), device (D...), bill (B...) or plan (P...).

    Args:
        id: The id, e.g. "L1002" or "B1001".
    """
    table = _ID_TABLES.get(id.strip()[:1].upper())
    if table is None:
        raise ToolError(f"unknown id {id!r}: ids start with C, L, D, B or P")
    return db.get(table, id.strip())


def get_bills_for_customer(db: Db, customer_id: str) -> list[dict[str, Any]]:
    """List a customer's bills, most recent first.

    Args:
        customer_id: The customer id, e.g. "C1001".
    """
    customer = db.get("customers", customer_id, "customer")
    bills = [db.get("bills", bid) for bid in customer["bill_ids"] if db.find("bills", bid)]
    return sorted(bills, key=lambda b: b["issue_date"], reverse=True)


def get_data_usage(db: Db, customer_id: str, line_id: str) -> dict[str, Any]:
    """Data used this cycle on a line, its plan's limit, data refueled, and what remains.

    Args:
        customer_id: The customer id, e.g. "C1001".
        line_id: The line id, e.g. "L1002".
    """
    line = _customer_line(db, customer_id, line_id)
    plan = db.get("plans", line["plan_id"], "plan")
    allowance = plan["data_limit_gb"] + line["data_refueling_gb"]
    return {"line_id": line_id, "data_used_gb": line["data_used_gb"], "data_limit_gb": plan["data_limit_gb"],
            "data_refueling_gb": line["data_refueling_gb"],
            "remaining_gb": round(max(0.0, allowance - line["data_used_gb"]), 2),
            "refueling_price_per_gb": plan["data_refueling_price_per_gb"]}


def list_plans(db: Db) -> list[dict[str, Any]]:
    """List every available plan with its data limit, monthly price and refueling price per GB."""
    return list(db.table("plans").values())


def transfer_to_human_agents(db: Db, summary: str) -> str:
    """Transfer the customer to a human agent, with a summary of their issue. Only when nothing else can fix it.

    Args:
        summary: A summary of the customer's issue.
    """
    return "Transfer successful"


# ---- write tools ------------------------------------------------------------------------------------------------

def suspend_line(db: Db, customer_id: str, line_id: str, reason: str) -> dict[str, Any]:
    """Suspend an active line.

    Args:
        customer_id: The customer id, e.g. "C1001".
        line_id: The line id, e.g. "L1002".
        reason: Why the line is suspended.
    """
    line = _customer_line(db, customer_id, line_id)
    if line["status"] != "Active":
        raise ToolError(f"line {line_id} is {line['status']}; only an Active line can be suspended")
    line = db.write("lines", line_id)
    line.update(status="Suspended", suspension_start_date=TODAY, suspension_reason=reason)
    return line


def resume_line(db: Db, customer_id: str, line_id: str) -> dict[str, Any]:
    """Lift the suspension of a line. The customer must then reboot their phone to get service back.

    Args:
        customer_id: The customer id, e.g. "C1001".
        line_id: The line id, e.g. "L1002".
    """
    line = _customer_line(db, customer_id, line_id)
    if line["status"] != "Suspended":
        raise ToolError(f"line {line_id} is {line['status']}, not Suspended")
    line = db.write("lines", line_id)
    line["status"] = "Active"
    line.pop("suspension_start_date", None)
    line.pop("suspension_reason", None)
    return line


def enable_roaming(db: Db, customer_id: str, line_id: str) -> str:
    """Enable data roaming on a line (free of charge).

    Args:
        customer_id: The customer id, e.g. "C1001".
        line_id: The line id, e.g. "L1002".
    """
    return _set_roaming(db, customer_id, line_id, True)


def disable_roaming(db: Db, customer_id: str, line_id: str) -> str:
    """Disable data roaming on a line.

    Args:
        customer_id: The customer id, e.g. "C1001".
        line_id: The line id, e.g. "L1002".
    """
    return _set_roaming(db, customer_id, line_id, False)


def refuel_data(db: Db, customer_id: str, line_id: str, gb_amount: float) -> dict[str, Any]:
    """Add data to a line for this cycle, charged at the plan's price per GB (at most 2 GB).

    Args:
        customer_id: The customer id, e.g. "C1001".
        line_id: The line id, e.g. "L1002".
        gb_amount: Gigabytes to add, more than 0 and at most 2.
    """
    line = _customer_line(db, customer_id, line_id)
    if not 0 < gb_amount <= MAX_REFUEL_GB:
        raise ToolError(f"gb_amount must be more than 0 and at most {MAX_REFUEL_GB:g}")
    plan = db.get("plans", line["plan_id"], "plan")
    charge = round_usd(gb_amount * plan["data_refueling_price_per_gb"])
    line = db.write("lines", line_id)
    line["data_refueling_gb"] = round(line["data_refueling_gb"] + gb_amount, 3)
    _charge_draft_bill(db, customer_id, f"Data refueling {gb_amount:g} GB - Line {line['phone_number']}", charge)
    return {"line_id": line_id, "data_refueling_gb": line["data_refueling_gb"], "charge_usd": charge}


def change_plan(db: Db, customer_id: str, line_id: str, plan_id: str) -> dict[str, Any]:
    """Move a line to another plan.

    Args:
        customer_id: The customer id, e.g. "C1001".
        line_id: The line id, e.g. "L1002".
        plan_id: The new plan's id, e.g. "P1002".
    """
    line = _customer_line(db, customer_id, line_id)
    db.get("plans", plan_id, "plan")
    if line["plan_id"] == plan_id:
        raise ToolError(f"line {line_id} is already on plan {plan_id}")
    line = db.write("lines", line_id)
    line.update(plan_id=plan_id, last_plan_change_date=TODAY)
    return line


def send_payment_request(db: Db, customer_id: str, bill_id: str) -> str:
    """Send the customer a request to pay a bill; the bill becomes 'Awaiting Payment'. Check it is overdue first.

    Args:
        customer_id: The customer id, e.g. "C1001".
        bill_id: The bill id, e.g. "B1002".
    """
    customer = db.get("customers", customer_id, "customer")
    if bill_id not in customer["bill_ids"]:
        raise ToolError(f"bill {bill_id} does not belong to customer {customer_id}")
    for other in customer["bill_ids"]:
        if (record := db.find("bills", other)) and record["status"] == "Awaiting Payment":
            raise ToolError(f"bill {other} is already awaiting payment; a customer can have only one")
    bill = db.write("bills", bill_id, "bill")
    bill["status"] = "Awaiting Payment"
    device.receive_payment_request(db, bill_id, bill["total_due"])
    return f"Payment request for bill {bill_id} (${bill['total_due']:.2f}) sent to the customer"


# ---- setup functions (initialization_actions) and assertions ------------------------------------------------------

def set_data_usage(db: Db, customer_id: str, line_id: str, data_used_gb: float) -> None:
    _customer_line(db, customer_id, line_id)
    db.write("lines", line_id)["data_used_gb"] = data_used_gb


def suspend_line_for_overdue_bill(db: Db, customer_id: str, line_id: str, new_bill_id: str,
                                  contract_ended: bool) -> None:
    """An overdue bill for the line's plan, and the line suspended for it (its contract ended, if asked)."""
    line = _customer_line(db, customer_id, line_id)
    plan = db.get("plans", line["plan_id"])
    amount = plan["price_per_month"]
    db.insert("bills", new_bill_id, {
        "bill_id": new_bill_id, "customer_id": customer_id, "period_start": "2025-01-01",
        "period_end": "2025-01-31", "issue_date": "2025-01-05", "total_due": amount, "due_date": "2025-01-19",
        "status": "Overdue", "line_items": [{"description": f"{plan['name']} - Line {line['phone_number']}",
                                             "amount": amount, "date": "2025-01-05", "item_type": "Plan Charge"}]})
    db.write("customers", customer_id)["bill_ids"].append(new_bill_id)
    line = db.write("lines", line_id)
    line.update(status="Suspended", suspension_start_date="2025-02-01")
    if contract_ended:
        line["contract_end_date"] = "2025-02-01"


def assert_data_refueling_amount(db: Db, customer_id: str, line_id: str, expected_amount: float) -> bool:
    return abs(_customer_line(db, customer_id, line_id)["data_refueling_gb"] - expected_amount) < 1e-6


def assert_no_overdue_bill(db: Db, overdue_bill_id: str) -> bool:
    """True when the bill does not exist or has been paid."""
    bill = db.find("bills", overdue_bill_id)
    return bill is None or bill["status"] == "Paid"


# ---- helpers ----------------------------------------------------------------------------------------------------

def _customer_line(db: Db, customer_id: str, line_id: str) -> dict[str, Any]:
    customer = db.get("customers", customer_id, "customer")
    if line_id not in customer["line_ids"]:
        raise ToolError(f"line {line_id} does not belong to customer {customer_id}")
    return db.get("lines", line_id, "line")


def _set_roaming(db: Db, customer_id: str, line_id: str, enabled: bool) -> str:
    line = _customer_line(db, customer_id, line_id)
    state = "enabled" if enabled else "disabled"
    if line["roaming_enabled"] == enabled:
        return f"Roaming was already {state} on line {line_id}"
    db.write("lines", line_id)["roaming_enabled"] = enabled
    return f"Roaming {state} on line {line_id}"


def _charge_draft_bill(db: Db, customer_id: str, description: str, amount: float) -> None:
    """Add a charge to the customer's draft (next) bill, when there is one."""
    for bill_id in db.get("customers", customer_id)["bill_ids"]:
        bill = db.find("bills", bill_id)
        if bill is not None and bill["status"] == "Draft":
            bill = db.write("bills", bill_id)
            bill["line_items"].append({"description": description, "amount": amount, "date": TODAY,
                                       "item_type": "Charge"})
            bill["total_due"] = round_usd(bill["total_due"] + amount)
            return


DOMAIN = Domain(
    name="telecom",
    load=load,
    read_tools=(get_customer_by_phone, get_customer_by_id, get_customer_by_name, get_details_by_id,
                get_bills_for_customer, get_data_usage, list_plans, transfer_to_human_agents),
    write_tools=(suspend_line, resume_line, enable_roaming, disable_roaming, refuel_data, change_plan,
                 send_payment_request),
    user_read_tools=device.READ_TOOLS,
    user_write_tools=device.WRITE_TOOLS,
    setup=(set_data_usage, suspend_line_for_overdue_bill, *setup.SETUP),
    assertions=(assert_data_refueling_amount, assert_no_overdue_bill, *setup.ASSERTIONS),
    user_tables=frozenset({"user"}),
    solo_note=("The phone tools (check_*, toggle_*, run_speed_test, can_send_mms, reboot_device, make_payment, ...) "
               "act on the customer's own phone. No customer is present, so you operate them yourself."),
)
