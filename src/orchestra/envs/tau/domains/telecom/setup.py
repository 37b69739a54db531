"""Telecom domain, setup and checks of the customer's side: τ² `initialization_actions` that break the phone in
the ways the tasks need, and the `env_assertions` that check it works again (see `device.py` for the model).

`break_apn_settings` marks the APN name as broken (no service until a reset and a reboot); `break_apn_mms_setting`
clears the MMSC URL; `break_vpn` connects a VPN whose performance is poor.
"""

from __future__ import annotations

from orchestra.envs.tau.domains import Db
from orchestra.envs.tau.domains.telecom import device


def set_user_info(db: Db, name: str, phone_number: str) -> None:
    db.write("user", "surroundings").update(name=name, phone_number=phone_number)


def set_user_location(db: Db, abroad: bool) -> None:
    db.write("user", "surroundings")["abroad"] = abroad


def simulate_network_search(db: Db) -> None:
    device.network_search(db)


def turn_roaming_off(db: Db) -> None:
    db.write("user", "device")["roaming_enabled"] = False


def turn_roaming_on(db: Db) -> None:
    db.write("user", "device")["roaming_enabled"] = True


def turn_data_off(db: Db) -> None:
    db.write("user", "device")["data_enabled"] = False


def turn_data_saver_mode_on(db: Db) -> None:
    db.write("user", "device")["data_saver_mode"] = True


def turn_airplane_mode_on(db: Db) -> None:
    db.write("user", "device")["airplane_mode"] = True
    device.network_search(db)


def break_vpn(db: Db) -> None:
    db.write("user", "device").update(vpn_enabled_setting=True, vpn_connected=True,
                                      vpn_details={"server": "vpn.example.net", "performance": "poor"})


def unseat_sim_card(db: Db) -> None:
    db.write("user", "device")["sim_card_missing"] = True
    device.network_search(db)


def lock_sim_card(db: Db, mode: str) -> None:
    db.write("user", "device")["sim_card_status"] = f"locked_{mode}"
    device.network_search(db)


def break_apn_settings(db: Db) -> None:
    db.write("user", "device")["active_apn_settings"]["apn_name"] = device.BROKEN_APN_NAME
    device.network_search(db)


def break_apn_mms_setting(db: Db) -> None:
    db.write("user", "device")["active_apn_settings"]["mmsc_url"] = ""


def set_wifi_calling(db: Db, enabled: bool, mms_over_wifi: bool) -> None:
    db.write("user", "device").update(wifi_calling_enabled=enabled, wifi_calling_mms_over_wifi=mms_over_wifi)


def remove_app_permission(db: Db, app_name: str, permission: str) -> None:
    device.app(db, app_name)
    db.write("user", "device")["app_statuses"][app_name].setdefault("permissions", {})[permission] = False


def assert_service_status(db: Db, expected_status: str) -> bool:
    return device.phone_state(db)["network_connection_status"] == expected_status


def assert_mobile_data_status(db: Db, expected_status: bool) -> bool:
    return (device.data_problem(db) is None) == expected_status


def assert_internet_speed(db: Db, expected_speed: float, expected_desc: str) -> bool:
    mbps, label = device.speed(db)
    return mbps is not None and mbps >= expected_speed and label == expected_desc.lower()


def assert_can_send_mms(db: Db, expected_status: bool) -> bool:
    return (device.mms_problem(db) is None) == expected_status


SETUP = (set_user_info, set_user_location, simulate_network_search, turn_roaming_off, turn_roaming_on,
         turn_data_off, turn_data_saver_mode_on, turn_airplane_mode_on, break_vpn, unseat_sim_card, lock_sim_card,
         break_apn_settings, break_apn_mms_setting, set_wifi_calling, remove_app_permission)
ASSERTIONS = (assert_service_status, assert_mobile_data_status, assert_internet_speed, assert_can_send_mms)
