"""The suite's own guard (conftest): nothing a test makes up reaches another machine."""

import pytest
import requests


@pytest.mark.parametrize("url", ["http://10.1.2.3:11434/api/version", "http://gpu1:11434/", "http://[2001:db8::1]:1/"])
def test_non_loopback_addresses_are_refused_at_once(url):
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=1)
