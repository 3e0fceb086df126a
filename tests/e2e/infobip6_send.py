"""Sends with Infobip's Python client 6.x to a local Postern (run in a venv of its own by
tests/e2e/test_infobip_clients.py); prints the answer, or the error, as JSON.

Usage: python infobip6_send.py BASE_URL KEY REQUEST_JSON
"""

import json
import sys

from infobip_api_client.api.email_api import EmailApi
from infobip_api_client.api_client import ApiClient
from infobip_api_client.configuration import Configuration
from infobip_api_client.exceptions import ApiException
from infobip_api_client.models.email_request import EmailRequest


def main() -> None:
    base_url, key, request_json = sys.argv[1:4]
    api = EmailApi(ApiClient(Configuration(host=base_url, api_key=key)))
    try:
        answer = api.send_email(EmailRequest.from_dict(json.loads(request_json)))
    except ApiException as exc:
        data = exc.data.to_dict() if exc.data is not None else None
        print(
            json.dumps(
                {
                    "error": type(exc).__name__,
                    "status": exc.status,
                    "data_type": type(exc.data).__name__,
                    "data": data,
                }
            )
        )
        return
    print(json.dumps({"answer": answer.to_dict(), "type": type(answer).__name__}))


if __name__ == "__main__":
    main()
