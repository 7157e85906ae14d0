"""Drives wechatpy, unmodified, against a wxcentral hub (tests/wechatpy.rs).

The only changes an adopting team makes: the API base URLs point at the hub, and the token
fetch (which wechatpy hard-codes to api.weixin.qq.com) goes to the hub's /cgi-bin/token. The
secret given is a wxcentral client key, not the AppSecret.

Speaks one JSON object per line on stdout; waits for a line on stdin where the test acts on
the simulator.
"""
import json
import os
import sys

from wechatpy import WeChatClient

HUB = os.environ["HUB"]


class HubClient(WeChatClient):
    API_BASE_URL = HUB + "/cgi-bin/"

    def fetch_access_token(self):
        return self._fetch_access_token(
            url=HUB + "/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": self.appid, "secret": self.secret},
        )


def say(**kw):
    print(json.dumps(kw), flush=True)


fetches = []
client = HubClient(os.environ["APPID"], os.environ["SECRET"])
client.wxa.API_BASE_URL = HUB + "/"
original_fetch = client.fetch_access_token


def counted_fetch():
    fetches.append(1)
    return original_fetch()


client.fetch_access_token = counted_fetch

token = client.access_token
user = client.user.get("openid-before")
ticket = client.jsapi.get_ticket()
qr = client.qrcode.create({"expire_seconds": 600, "action_name": "QR_SCENE", "action_info": {"scene": {"scene_id": 7}}})
code = client.wxa.get_wxa_code_unlimited("a=1")
say(
    step="before",
    token=token,
    openid=user.get("openid"),
    ticket=ticket.get("ticket"),
    qr_ticket=qr.get("ticket"),
    png=code.content[:4] == b"\x89PNG",
    fetches=len(fetches),
)

sys.stdin.readline()  # the test kills every token of the app behind the hub's back

user = client.user.get("openid-after")
ticket = client.jsapi.get_ticket()
say(
    step="after",
    token=client.access_token,
    openid=user.get("openid"),
    ticket=ticket.get("ticket"),
    fetches=len(fetches),
)
