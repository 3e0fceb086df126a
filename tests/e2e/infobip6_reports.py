"""Reads reports or logs with Infobip's Python client 6.x from a local Postern (run in a
venv of its own by tests/e2e/test_infobip_clients.py); prints the answer, or the error, as
JSON.

Usage: python infobip6_reports.py BASE_URL KEY reports|logs PARAMS_JSON
PARAMS_JSON: keyword arguments of get_email_delivery_reports / get_email_logs.
"""

import json
import sys

from infobip_api_client.api.email_api import EmailApi
from infobip_api_client.api_client import ApiClient
from infobip_api_client.configuration import Configuration
from infobip_api_client.exceptions import ApiException


def main() -> None:
    base_url, key, what, params_json = sys.argv[1:5]
    api = EmailApi(ApiClient(Configuration(host=base_url, api_key=key)))
    call = api.get_email_delivery_reports if what == "reports" else api.get_email_logs
    try:
        answer = call(**json.loads(params_json))
    except ApiException as exc:
        data = exc.data.to_dict() if exc.data is not None else None
        print(
            json.dumps(
                {
                    "error": type(exc).__name__,
                    "status": exc.status,
                    "data_type": type(exc.data).__name__,
                    "data": data,
                    # Its spec names no type for a 400 of these calls: the body as it came.
                    "body": exc.body,
                }
            )
        )
        return
    print(json.dumps({"answer": answer.to_dict(), "type": type(answer).__name__}, default=str))


if __name__ == "__main__":
    main()
