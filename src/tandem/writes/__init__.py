"""Tag writes: requests from REST and MQTT, checked, executed at most once per uuid by a pair."""
