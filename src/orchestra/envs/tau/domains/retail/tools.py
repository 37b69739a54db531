"""Retail domain: tools over users, products and orders, written from the retail policy (policy.md).

Tables: `users` (by user id), `products` (by product id; `variants` by item id), `orders` (by order id).
Write tools enforce what the policy states as hard rules (order status, same product for item changes, available
items, payment methods the user owns, gift-card balance); conversational rules (authenticate first, confirm before
acting) are the agent's to follow and are graded through the final database.

What each write records on the order (the policy lists them as optional attributes):
- cancel: status `cancelled`, `cancel_reason`, a refund per payment (gift cards credited at once);
- modify items: items replaced in place, status `pending (items modified)`, a payment or refund of the difference;
- modify payment: a payment on the new method and a refund to the old one;
- return: status `return requested`, `return_items`, `return_payment_method_id`;
- exchange: status `exchange requested`, `exchange_items`, `exchange_new_items`, `exchange_payment_method_id`,
  `exchange_price_difference`.
"""

from __future__ import annotations

import ast
import operator
from collections import Counter
from pathlib import Path
from typing import Any

from orchestra.envs.tau.domains import Db, Domain, Tables, ToolError, read_data_file, round_usd

CANCEL_REASONS = ("no longer needed", "ordered by mistake")


def load(folder: Path) -> Tables:
    data = read_data_file(folder, "db")
    if data is None:
        raise ToolError(f"no db.json or db.toml in {folder}")
    return {name: data[name] for name in ("users", "products", "orders")}


# ---- read tools -------------------------------------------------------------------------------------------------

def find_user_id_by_email(db: Db, email: str) -> str:
    """Find a user's id by their email address.

    Args:
        email: The user's email, e.g. "noah.brown7922@example.com".
    """
    wanted = email.strip().lower()
    for user_id, user in db.table("users").items():
        if user["email"].lower() == wanted:
            return user_id
    raise ToolError(f"no user with email {email!r}")


def find_user_id_by_name_zip(db: Db, first_name: str, last_name: str, zip: str) -> str:
    """Find a user's id by first name, last name and zip code.

    Args:
        first_name: The user's first name, e.g. "Noah".
        last_name: The user's last name, e.g. "Brown".
        zip: The zip code of the user's address, e.g. "80279".
    """
    for user_id, user in db.table("users").items():
        name = user["name"]
        if (name["first_name"].lower() == first_name.strip().lower()
                and name["last_name"].lower() == last_name.strip().lower()
                and user["address"]["zip"] == zip.strip()):
            return user_id
    raise ToolError(f"no user named {first_name} {last_name} with zip code {zip}")


def get_user_details(db: Db, user_id: str) -> dict[str, Any]:
    """Get a user's profile: name, email, address, payment methods (with gift-card balances) and order ids.

    Args:
        user_id: The user id, e.g. "noah_brown_6181".
    """
    return db.get("users", user_id, "user")


def get_order_details(db: Db, order_id: str) -> dict[str, Any]:
    """Get an order: status, items (with item ids and prices), address, fulfillments and payment history.

    Args:
        order_id: The order id with its leading '#', e.g. "#W0000000".
    """
    return db.get("orders", order_id, "order")


def get_product_details(db: Db, product_id: str) -> dict[str, Any]:
    """Get a product type and all its variant items (options, availability, price).

    Args:
        product_id: The product id (not an item id), e.g. "6086499569".
    """
    return db.get("products", product_id, "product")


def get_item_details(db: Db, item_id: str) -> dict[str, Any]:
    """Get one variant item (its product, options, availability and price) by item id.

    Args:
        item_id: The item id, e.g. "1008292230".
    """
    product_id = _product_of_item(db, item_id)
    product = db.get("products", product_id)
    return {"product_id": product_id, "name": product["name"], **product["variants"][item_id]}


def list_all_product_types(db: Db) -> dict[str, str]:
    """List every product type: product name to product id."""
    return {p["name"]: pid for pid, p in sorted(db.table("products").items(), key=lambda kv: kv[1]["name"])}


def calculate(db: Db, expression: str) -> float:
    """Evaluate an arithmetic expression (numbers, + - * / and parentheses); the result is rounded to 2 decimals.

    Args:
        expression: The expression, e.g. "(1299.99 - 49.5) * 2".
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolError(f"cannot parse expression {expression!r}") from None
    return round(_arith(tree.body), 2)


def transfer_to_human_agents(db: Db, summary: str) -> str:
    """Transfer the user to a human agent, with a summary of their issue. Only when the request is out of scope.

    Args:
        summary: A summary of the user's issue.
    """
    return "Transfer successful"


# ---- write tools ------------------------------------------------------------------------------------------------

def cancel_pending_order(db: Db, order_id: str, reason: str) -> dict[str, Any]:
    """Cancel a pending order. Payments are refunded (gift cards at once, other methods in 5-7 business days).

    Args:
        order_id: The order id, e.g. "#W0000000".
        reason: Either "no longer needed" or "ordered by mistake".
    """
    order = _order_with_status(db, order_id, "pending")
    if reason not in CANCEL_REASONS:
        raise ToolError(f"reason must be one of {list(CANCEL_REASONS)}")
    user_id = order["user_id"]
    order = db.write("orders", order_id)
    refunds = []
    for payment in order["payment_history"]:
        if payment["transaction_type"] == "payment":
            refunds.append({"transaction_type": "refund", "amount": payment["amount"],
                            "payment_method_id": payment["payment_method_id"]})
            _credit_gift_card(db, user_id, payment["payment_method_id"], payment["amount"])
    order["payment_history"].extend(refunds)
    order["status"] = "cancelled"
    order["cancel_reason"] = reason
    return order


def modify_pending_order_address(db: Db, order_id: str, address1: str, address2: str, city: str, state: str,
                                 country: str, zip: str) -> dict[str, Any]:
    """Change the shipping address of a pending order.

    Args:
        order_id: The order id, e.g. "#W0000000".
        address1: First address line, e.g. "123 Main St".
        address2: Second address line, e.g. "Apt 1" (may be empty).
        city: City, e.g. "San Francisco".
        state: State, e.g. "CA".
        country: Country, e.g. "USA".
        zip: Zip code, e.g. "12345".
    """
    _order_with_status(db, order_id, "pending")
    order = db.write("orders", order_id)
    order["address"] = _address(address1, address2, city, state, country, zip)
    return order


def modify_pending_order_payment(db: Db, order_id: str, payment_method_id: str) -> dict[str, Any]:
    """Pay a pending order with a different payment method; the original method is refunded.

    Args:
        order_id: The order id, e.g. "#W0000000".
        payment_method_id: A payment method of the user, e.g. "gift_card_0000000" or "credit_card_0000000".
    """
    order = _order_with_status(db, order_id, "pending")
    payments = [p for p in order["payment_history"] if p["transaction_type"] == "payment"]
    if len(payments) != 1:
        raise ToolError("the payment of an order can be changed only when it was paid with a single payment")
    old, amount = payments[0]["payment_method_id"], payments[0]["amount"]
    if payment_method_id == old:
        raise ToolError("the new payment method must differ from the current one")
    method = _payment_method(db, order["user_id"], payment_method_id)
    if method["source"] == "gift_card" and method["balance"] < amount:
        raise ToolError(f"gift card balance {method['balance']} does not cover the order total {amount}")
    order = db.write("orders", order_id)
    order["payment_history"].extend([
        {"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id},
        {"transaction_type": "refund", "amount": amount, "payment_method_id": old},
    ])
    _credit_gift_card(db, order["user_id"], payment_method_id, -amount)
    _credit_gift_card(db, order["user_id"], old, amount)
    return order


def _swap_to_write(db: Db, order_id: str, status: str, item_ids: list[str], new_item_ids: list[str],
                   payment_method_id: str) -> tuple[dict[str, Any], float]:
    """Check an item swap (order status, items, payment covering the difference); the order opened for writing
    and the price difference."""
    order = _order_with_status(db, order_id, status)
    diff = _check_swap(db, order, item_ids, new_item_ids)
    method = _payment_method(db, order["user_id"], payment_method_id)
    if method["source"] == "gift_card" and method["balance"] < diff:
        raise ToolError(f"gift card balance {method['balance']} does not cover the price difference {diff}")
    return db.write("orders", order_id), diff


def modify_pending_order_items(db: Db, order_id: str, item_ids: list[str], new_item_ids: list[str],
                               payment_method_id: str) -> dict[str, Any]:
    """Swap items of a pending order for other options of the same products. Can be done once per order.

    Args:
        order_id: The order id, e.g. "#W0000000".
        item_ids: The item ids to replace (repeat an id to replace several units of it).
        new_item_ids: The new item ids, in the same order as `item_ids`; each of the same product, available.
        payment_method_id: The method that pays or receives the price difference, e.g. "credit_card_0000000".
    """
    order, diff = _swap_to_write(db, order_id, "pending", item_ids, new_item_ids, payment_method_id)
    for old_id, new_id in zip(item_ids, new_item_ids, strict=True):
        item = next(i for i in order["items"] if i["item_id"] == old_id and not i.get("_swapped"))
        variant = db.get("products", item["product_id"])["variants"][new_id]
        item.update(item_id=new_id, price=variant["price"], options=variant["options"], _swapped=True)
    for item in order["items"]:
        item.pop("_swapped", None)
    if diff:
        order["payment_history"].append({"transaction_type": "payment" if diff > 0 else "refund",
                                         "amount": abs(diff), "payment_method_id": payment_method_id})
    _credit_gift_card(db, order["user_id"], payment_method_id, -diff)
    order["status"] = "pending (items modified)"
    return order


def return_delivered_order_items(db: Db, order_id: str, item_ids: list[str], payment_method_id: str
                                 ) -> dict[str, Any]:
    """Request a return of items of a delivered order; the user gets an email on how to send them back.

    Args:
        order_id: The order id, e.g. "#W0000000".
        item_ids: The item ids to return (repeat an id to return several units of it).
        payment_method_id: Where the refund goes: the order's original payment method or a gift card of the user.
    """
    order = _order_with_status(db, order_id, "delivered")
    _check_items_in_order(order, item_ids)
    method = _payment_method(db, order["user_id"], payment_method_id)
    original = {p["payment_method_id"] for p in order["payment_history"] if p["transaction_type"] == "payment"}
    if payment_method_id not in original and method["source"] != "gift_card":
        raise ToolError("the refund must go to the original payment method or to a gift card")
    order = db.write("orders", order_id)
    order["status"] = "return requested"
    order["return_items"] = sorted(item_ids)
    order["return_payment_method_id"] = payment_method_id
    return order


def exchange_delivered_order_items(db: Db, order_id: str, item_ids: list[str], new_item_ids: list[str],
                                   payment_method_id: str) -> dict[str, Any]:
    """Request an exchange of items of a delivered order for other options of the same products. Once per order.

    Args:
        order_id: The order id, e.g. "#W0000000".
        item_ids: The item ids to exchange (repeat an id to exchange several units of it).
        new_item_ids: The new item ids, in the same order as `item_ids`; each of the same product, available.
        payment_method_id: The method that pays or receives the price difference, e.g. "gift_card_0000000".
    """
    order, diff = _swap_to_write(db, order_id, "delivered", item_ids, new_item_ids, payment_method_id)
    order["status"] = "exchange requested"
    order["exchange_items"] = sorted(item_ids)
    order["exchange_new_items"] = sorted(new_item_ids)
    order["exchange_payment_method_id"] = payment_method_id
    order["exchange_price_difference"] = diff
    return order


def modify_user_address(db: Db, user_id: str, address1: str, address2: str, city: str, state: str, country: str,
                        zip: str) -> dict[str, Any]:
    """Change a user's default address (existing orders keep theirs).

    Args:
        user_id: The user id, e.g. "noah_brown_6181".
        address1: First address line, e.g. "123 Main St".
        address2: Second address line, e.g. "Apt 1" (may be empty).
        city: City, e.g. "San Francisco".
        state: State, e.g. "CA".
        country: Country, e.g. "USA".
        zip: Zip code, e.g. "12345".
    """
    user = db.write("users", user_id, "user")
    user["address"] = _address(address1, address2, city, state, country, zip)
    return user


# ---- helpers ----------------------------------------------------------------------------------------------------

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _arith(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _arith(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _arith(node.left), _arith(node.right)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ToolError("division by zero")
        return _OPS[type(node.op)](left, right)
    raise ToolError("only numbers, + - * / and parentheses are allowed")


def _order_with_status(db: Db, order_id: str, status: str) -> dict[str, Any]:
    order = db.get("orders", order_id, "order")
    if order["status"] != status:
        raise ToolError(f"order {order_id} is {order['status']!r}; this action needs a {status!r} order")
    return order


def _payment_method(db: Db, user_id: str, payment_method_id: str) -> dict[str, Any]:
    method = db.get("users", user_id, "user")["payment_methods"].get(payment_method_id)
    if method is None:
        raise ToolError(f"payment method {payment_method_id!r} not found for user {user_id}")
    return method


def _credit_gift_card(db: Db, user_id: str, payment_method_id: str, amount: float) -> None:
    """Add `amount` (negative to charge) to a gift card's balance; other methods settle outside the database."""
    method = db.get("users", user_id)["payment_methods"].get(payment_method_id)
    if method is None or method["source"] != "gift_card" or not amount:
        return
    method = db.write("users", user_id)["payment_methods"][payment_method_id]
    method["balance"] = round_usd(method["balance"] + amount)


def _product_of_item(db: Db, item_id: str) -> str:
    for product_id, product in db.table("products").items():
        if item_id in product["variants"]:
            return product_id
    raise ToolError(f"item {item_id!r} not found")


def _check_items_in_order(order: dict[str, Any], item_ids: list[str]) -> None:
    if not item_ids:
        raise ToolError("item_ids is empty")
    have = Counter(i["item_id"] for i in order["items"])
    for item_id, count in Counter(item_ids).items():
        if have[item_id] < count:
            raise ToolError(f"item {item_id} is not in order {order['order_id']} (or not that many times)")


def _check_swap(db: Db, order: dict[str, Any], item_ids: list[str], new_item_ids: list[str]) -> float:
    """Validate an item swap; return the price difference (new minus old), rounded to cents."""
    _check_items_in_order(order, item_ids)
    if len(item_ids) != len(new_item_ids):
        raise ToolError("item_ids and new_item_ids must have the same length")
    diff = 0.0
    for old_id, new_id in zip(item_ids, new_item_ids, strict=True):
        item = next(i for i in order["items"] if i["item_id"] == old_id)
        variants = db.get("products", item["product_id"])["variants"]
        new = variants.get(new_id)
        if new is None:
            raise ToolError(f"item {new_id} is not an option of product {item['product_id']} ({item['name']})")
        if new_id == old_id:
            raise ToolError(f"item {new_id} is the same as the item it would replace")
        if not new["available"]:
            raise ToolError(f"item {new_id} is not available")
        diff += new["price"] - item["price"]
    return round_usd(diff)


def _address(address1: str, address2: str, city: str, state: str, country: str, zip: str) -> dict[str, str]:
    return {"address1": address1, "address2": address2, "city": city, "country": country, "state": state,
            "zip": zip}


DOMAIN = Domain(
    name="retail",
    load=load,
    read_tools=(find_user_id_by_email, find_user_id_by_name_zip, get_user_details, get_order_details,
                get_product_details, get_item_details, list_all_product_types, calculate,
                transfer_to_human_agents),
    write_tools=(cancel_pending_order, modify_pending_order_address, modify_pending_order_payment,
                 modify_pending_order_items, return_delivered_order_items, exchange_delivered_order_items,
                 modify_user_address),
)
