"""Telecom domain, the customer's side: their phone, modelled from tech_support_manual.md.

Table `user`: record `device` (user_db.toml's [device] plus the pending APN change and VPN details) and record
`surroundings` (name, phone number, abroad or not, payment requests received).

The model, in the manual's terms:
- Service (connection status, technology, signal) is found by a network search, run when the phone boots, leaves
  airplane mode, gets its SIM reseated or its network mode changed (and by `simulate_network_search` in setup). It
  is cached in between, so lifting a line's suspension only brings service back after a reboot, as the policy says.
  No service when: airplane mode, SIM missing or locked, broken APN, or the line (found by the phone number) is not
  Active. Otherwise the best technology the mode allows (5G > 4G > 3G > 2G).
- Mobile data is computed live: service, data switch on, roaming on the phone and on the line when abroad, and data
  used within the plan's limit plus refueled data.
- Speed: a base rate per technology scaled by signal, cut by data saver and by a badly performing VPN;
  'excellent' needs >= 200 Mbps (5G with a good signal and nothing slowing it down).
- MMS: mobile data, at least 3G, an MMSC URL in the APN, the messaging app's sms and storage permissions, and not
  Wi-Fi calling with MMS over Wi-Fi while no Wi-Fi is connected.
- APN changes (reset or set) apply at the next reboot.
Setup functions that break the phone, and the env assertions, are in `setup.py`.
"""

from __future__ import annotations

import copy
from typing import Any

from orchestra.envs.tau.domains import Db, Tables, ToolError

DEFAULT_APN = {"apn_name": "internet", "mms_apn": "mms", "mmsc_url": "http://mms.carrier.com/mms/wapenc"}
BROKEN_APN_NAME = "broken"
MODES = ("4g_5g_preferred", "4g_only", "3g_only", "2g_only")
_MODE_TECH = {"4g_5g_preferred": "5G", "4g_only": "4G", "3g_only": "3G", "2g_only": "2G"}
_TECH_SIGNAL = {"5G": "good", "4G": "good", "3G": "fair", "2G": "poor"}
_TECH_MBPS = {"5G": 500.0, "4G": 100.0, "3G": 10.0, "2G": 0.2}
_SIGNAL_FACTOR = {"excellent": 1.0, "good": 0.8, "fair": 0.5, "poor": 0.2, "none": 0.0}
_SPEED_BANDS = ((200.0, "excellent"), (50.0, "good"), (10.0, "fair"), (1.0, "poor"), (0.0, "very poor"))


def initial_tables(user_data: dict[str, Any]) -> Tables:
    phone = copy.deepcopy(user_data.get("device", {}))
    phone.setdefault("active_apn_settings", dict(DEFAULT_APN))
    phone.setdefault("app_statuses", {})
    phone.update(pending_apn_settings=None, vpn_details=None)
    surroundings = {"name": None, "phone_number": None, "abroad": False, "payment_requests": []}
    return {"user": {"device": phone, "surroundings": surroundings}}


# ---- reading the phone --------------------------------------------------------------------------------------------

def phone_state(db: Db) -> dict[str, Any]:
    return db.get("user", "device", "phone")


def user_line(db: Db) -> dict[str, Any] | None:
    number = db.get("user", "surroundings")["phone_number"]
    return next((line for line in db.table("lines").values() if line["phone_number"] == number), None)


def data_problem(db: Db) -> str | None:
    """Why mobile data does not work, or None when it does."""
    phone, where = phone_state(db), db.get("user", "surroundings")
    line = user_line(db)
    if phone["network_connection_status"] != "connected":
        return "no cellular service"
    if not phone["data_enabled"]:
        return "mobile data is off"
    if where["abroad"] and not phone["roaming_enabled"]:
        return "abroad with data roaming off on the phone"
    if where["abroad"] and not (line and line["roaming_enabled"]):
        return "abroad and the line is not roaming enabled"
    if line is not None:
        plan = db.find("plans", line["plan_id"])
        if plan and line["data_used_gb"] > plan["data_limit_gb"] + line["data_refueling_gb"]:
            return "the line's data limit is used up"
    return None


def speed(db: Db) -> tuple[float | None, str]:
    if data_problem(db) is not None:
        return None, "no connection"
    phone = phone_state(db)
    tech = phone["network_technology_connected"]
    mbps = _TECH_MBPS.get(tech, 0.0) * _SIGNAL_FACTOR.get(phone["network_signal_strength"], 0.0)
    if phone["data_saver_mode"]:
        mbps *= 0.2
    if phone["vpn_connected"] and (phone.get("vpn_details") or {}).get("performance") == "poor":
        mbps *= 0.1
    label = next(name for floor, name in _SPEED_BANDS if mbps >= floor)
    return round(mbps, 1), label


def mms_problem(db: Db) -> str | None:
    phone = phone_state(db)
    if (problem := data_problem(db)) is not None:
        return problem
    if phone["network_technology_connected"] == "2G":
        return "connected to 2G, which cannot carry MMS"
    if not phone["active_apn_settings"].get("mmsc_url"):
        return "no MMSC URL in the APN settings"
    if phone["wifi_calling_enabled"] and phone["wifi_calling_mms_over_wifi"] and not phone["wifi_connected"]:
        return "MMS is routed over Wi-Fi calling but no Wi-Fi is connected"
    permissions = phone["app_statuses"].get("messaging", {}).get("permissions", {})
    missing = [p for p in ("sms", "storage") if not permissions.get(p)]
    return f"the messaging app lacks permission: {', '.join(missing)}" if missing else None


def network_search(db: Db) -> None:
    """Run a network search and cache its result on the phone."""
    phone, line = db.write("user", "device"), user_line(db)
    down = (phone["airplane_mode"] or phone["sim_card_missing"] or phone["sim_card_status"] != "active"
            or phone["active_apn_settings"].get("apn_name") == BROKEN_APN_NAME
            or line is None or line["status"] != "Active")
    tech = _MODE_TECH.get(phone["network_mode_preference"], "4G")
    phone.update(network_connection_status="no_service" if down else "connected",
                 network_technology_connected="none" if down else tech,
                 network_signal_strength="none" if down else _TECH_SIGNAL[tech])


# ---- read tools (diagnostics) -------------------------------------------------------------------------------------

def check_status_bar(db: Db) -> str:
    """Show the icons in the phone's status bar (airplane mode, signal, network type, data, Wi-Fi, VPN, battery)."""
    phone = phone_state(db)
    parts = ["✈️ Airplane Mode"] if phone["airplane_mode"] else []
    signal = phone["network_signal_strength"]
    parts.append("📵 No Signal" if signal == "none" else f"📶 {signal.title()}")
    if phone["network_technology_connected"] != "none":
        parts.append(phone["network_technology_connected"])
    parts.append("📱 Data Enabled" if phone["data_enabled"] else "📵 Data Disabled")
    if phone["data_saver_mode"]:
        parts.append("🔽 Data Saver")
    if phone["wifi_enabled"]:
        parts.append("📡 Connected" if phone["wifi_connected"] else "📡 Enabled")
    if phone["vpn_connected"]:
        parts.append("🔒 VPN Connected")
    parts.append(f"🔋 {phone['battery_level']}%")
    return " | ".join(parts)


def check_network_status(db: Db) -> dict[str, Any]:
    """Check the phone's connection: airplane mode, service, signal, network type, mobile data and data roaming."""
    phone = phone_state(db)
    return {"airplane_mode": phone["airplane_mode"], "connection": phone["network_connection_status"],
            "signal_strength": phone["network_signal_strength"],
            "network_type": phone["network_technology_connected"], "mobile_data_enabled": phone["data_enabled"],
            "data_roaming_enabled": phone["roaming_enabled"], "wifi_connected": phone["wifi_connected"]}


def check_network_mode_preference(db: Db) -> str:
    """Check which network generations the phone prefers (e.g. 4g_5g_preferred, 2g_only)."""
    return phone_state(db)["network_mode_preference"]


def check_sim_status(db: Db) -> str:
    """Check the SIM card: active, missing, or locked with a PIN or PUK."""
    phone = phone_state(db)
    if phone["sim_card_missing"]:
        return "Missing: no SIM card detected"
    status = phone["sim_card_status"]
    return "Active" if status == "active" else f"Locked ({status.removeprefix('locked_').upper()} required)"


def check_data_restriction_status(db: Db) -> dict[str, Any]:
    """Check data-limiting features: whether Data Saver mode is on."""
    return {"data_saver_mode": phone_state(db)["data_saver_mode"]}


def check_apn_settings(db: Db) -> dict[str, Any]:
    """Check the APN settings in use (APN name, MMS APN, MMSC URL) and any change waiting for a reboot."""
    phone = phone_state(db)
    return {"active": phone["active_apn_settings"], "pending_until_reboot": phone["pending_apn_settings"]}


def check_wifi_status(db: Db) -> dict[str, Any]:
    """Check whether Wi-Fi is on and connected."""
    phone = phone_state(db)
    return {"wifi_enabled": phone["wifi_enabled"], "wifi_connected": phone["wifi_connected"],
            "signal_strength": phone["wifi_signal_strength"]}


def check_wifi_calling_status(db: Db) -> dict[str, Any]:
    """Check whether Wi-Fi Calling is on, and whether MMS is sent over Wi-Fi."""
    phone = phone_state(db)
    return {"wifi_calling_enabled": phone["wifi_calling_enabled"],
            "mms_over_wifi": phone["wifi_calling_mms_over_wifi"]}


def check_vpn_status(db: Db) -> dict[str, Any]:
    """Check whether a VPN is on and connected, with its details."""
    phone = phone_state(db)
    return {"vpn_enabled": phone["vpn_enabled_setting"], "vpn_connected": phone["vpn_connected"],
            "details": phone["vpn_details"]}


def check_installed_apps(db: Db) -> list[str]:
    """List the apps installed on the phone."""
    return sorted(phone_state(db)["app_statuses"])


def check_app_status(db: Db, app_name: str) -> dict[str, Any]:
    """Check an app's details, including its permissions.

    Args:
        app_name: The app, e.g. "messaging".
    """
    return app(db, app_name)


def check_app_permissions(db: Db, app_name: str) -> dict[str, bool]:
    """Check which permissions an app has.

    Args:
        app_name: The app, e.g. "messaging".
    """
    return app(db, app_name).get("permissions", {})


def run_speed_test(db: Db) -> str:
    """Measure the mobile internet download speed: 'no connection', or the speed with a rating up to 'excellent'."""
    mbps, label = speed(db)
    return "Speed test: no connection" if mbps is None else f"Speed test: {mbps:g} Mbps ({label})"


def can_send_mms(db: Db) -> str:
    """Check whether the messaging app can send MMS (picture) messages."""
    problem = mms_problem(db)
    return "MMS can be sent" if problem is None else "MMS cannot be sent"


def check_payment_request(db: Db) -> list[dict[str, Any]]:
    """List the payment requests the carrier has sent to this customer."""
    return db.get("user", "surroundings")["payment_requests"]


# ---- write tools (fixes) ------------------------------------------------------------------------------------------

def toggle_airplane_mode(db: Db) -> str:
    """Turn Airplane Mode on or off (on cuts all wireless connections)."""
    return _toggle(db, "airplane_mode", "Airplane mode", search=True)


def reseat_sim_card(db: Db) -> str:
    """Remove and reinsert the SIM card."""
    db.write("user", "device")["sim_card_missing"] = False
    network_search(db)
    return "SIM card reseated"


def toggle_data(db: Db) -> str:
    """Turn mobile data on or off."""
    return _toggle(db, "data_enabled", "Mobile data")


def toggle_roaming(db: Db) -> str:
    """Turn data roaming on or off on the phone."""
    return _toggle(db, "roaming_enabled", "Data roaming")


def toggle_data_saver_mode(db: Db) -> str:
    """Turn Data Saver mode on or off (on reduces data use and speed)."""
    return _toggle(db, "data_saver_mode", "Data saver mode")


def set_network_mode_preference(db: Db, mode: str) -> str:
    """Choose which network generations the phone uses.

    Args:
        mode: One of "4g_5g_preferred", "4g_only", "3g_only", "2g_only".
    """
    if mode not in MODES:
        raise ToolError(f"mode must be one of {list(MODES)}")
    db.write("user", "device")["network_mode_preference"] = mode
    network_search(db)
    return f"Network mode set to {mode}"


def set_apn_settings(db: Db, apn_name: str, mmsc_url: str) -> str:
    """Set the APN name and MMSC URL; they apply at the next reboot.

    Args:
        apn_name: The APN name, e.g. "internet".
        mmsc_url: The MMSC URL for picture messages.
    """
    db.write("user", "device")["pending_apn_settings"] = {"apn_name": apn_name, "mms_apn": "mms",
                                                          "mmsc_url": mmsc_url}
    return "APN settings saved; reboot the phone to apply them"


def reset_apn_settings(db: Db) -> str:
    """Reset the APN settings to the carrier's defaults; they apply at the next reboot."""
    db.write("user", "device")["pending_apn_settings"] = dict(DEFAULT_APN)
    return "APN settings reset to defaults; reboot the phone to apply them"


def toggle_wifi(db: Db) -> str:
    """Turn Wi-Fi on or off (no known Wi-Fi network is in range)."""
    return _toggle(db, "wifi_enabled", "Wi-Fi")


def toggle_wifi_calling(db: Db) -> str:
    """Turn Wi-Fi Calling on or off."""
    return _toggle(db, "wifi_calling_enabled", "Wi-Fi calling")


def connect_vpn(db: Db) -> str:
    """Connect to the configured VPN."""
    phone = db.write("user", "device")
    phone.update(vpn_enabled_setting=True, vpn_connected=True,
                 vpn_details=phone["vpn_details"] or {"server": "vpn.example.net", "performance": "good"})
    return "VPN connected"


def disconnect_vpn(db: Db) -> str:
    """Disconnect any active VPN."""
    phone = db.write("user", "device")
    phone.update(vpn_connected=False, vpn_details=None)
    return "VPN disconnected"


def grant_app_permission(db: Db, app_name: str, permission: str) -> str:
    """Give an app a permission.

    Args:
        app_name: The app, e.g. "messaging".
        permission: The permission, e.g. "storage" or "sms".
    """
    app(db, app_name)
    db.write("user", "device")["app_statuses"][app_name].setdefault("permissions", {})[permission] = True
    return f"Granted {permission} permission to {app_name}"


def reboot_device(db: Db) -> str:
    """Restart the phone: pending APN changes apply and the phone searches for the network again."""
    phone = db.write("user", "device")
    if phone["pending_apn_settings"] is not None:
        phone.update(active_apn_settings=phone["pending_apn_settings"], pending_apn_settings=None)
    network_search(db)
    return "Phone restarted"


def make_payment(db: Db) -> str:
    """Pay the open payment request the carrier sent (see check_payment_request)."""
    where = db.write("user", "surroundings")
    request = next((r for r in where["payment_requests"] if not r["paid"]), None)
    if request is None:
        raise ToolError("there is no open payment request")
    request["paid"] = True
    db.write("bills", request["bill_id"])["status"] = "Paid"
    return f"Paid ${request['amount_due']:.2f} for bill {request['bill_id']}"


def receive_payment_request(db: Db, bill_id: str, amount_due: float) -> None:
    """The carrier's side of `send_payment_request`: the request lands on the customer's phone."""
    db.write("user", "surroundings")["payment_requests"].append(
        {"bill_id": bill_id, "amount_due": amount_due, "paid": False})


# ---- helpers ------------------------------------------------------------------------------------------------------

def app(db: Db, app_name: str) -> dict[str, Any]:
    app = phone_state(db)["app_statuses"].get(app_name)
    if app is None:
        raise ToolError(f"no app named {app_name!r} is installed")
    return app


def _toggle(db: Db, field: str, label: str, *, search: bool = False) -> str:
    phone = db.write("user", "device")
    phone[field] = not phone[field]
    if search:
        network_search(db)
    return f"{label} is now {'ON' if phone[field] else 'OFF'}"


READ_TOOLS = (check_status_bar, check_network_status, check_network_mode_preference, check_sim_status,
              check_data_restriction_status, check_apn_settings, check_wifi_status, check_wifi_calling_status,
              check_vpn_status, check_installed_apps, check_app_status, check_app_permissions, run_speed_test,
              can_send_mms, check_payment_request)
WRITE_TOOLS = (toggle_airplane_mode, reseat_sim_card, toggle_data, toggle_roaming, toggle_data_saver_mode,
               set_network_mode_preference, set_apn_settings, reset_apn_settings, toggle_wifi, toggle_wifi_calling,
               connect_vpn, disconnect_vpn, grant_app_permission, reboot_device, make_payment)
