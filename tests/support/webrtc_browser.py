"""The browser's side of the WebRTC console test: a second aiortc peer, run as a process
inside the other network namespace.

``python -m tests.support.webrtc_browser <url> <cookie> <key> <frames>`` offers a
receive-only video transceiver and a DataChannel ``hid`` to ``url`` (the engine's
``/kvm/<name>/console/webrtc``, with the session ``cookie`` and the page's ``Origin``),
decodes ``frames`` video frames (the centre pixel of each, as RGB), presses and releases
``key`` on the DataChannel and prints one JSON line: ``{"status", "input", "colours",
"replies", "state"}``. It keeps the connection open until a line arrives on stdin, then
closes it and prints ``{"closed": true}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.parse

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

TIMEOUT = 10.0


async def main(url: str, cookie: str, key: str, want: int) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    channel = pc.createDataChannel("hid")
    opened, replies, tracks = asyncio.Event(), [], asyncio.Queue()
    channel.on("open", opened.set)
    channel.on("message", replies.append)
    pc.on("track", tracks.put_nowait)
    await pc.setLocalDescription(await pc.createOffer())
    parts = urllib.parse.urlsplit(url)
    headers = {"Cookie": cookie, "Origin": f"{parts.scheme}://{parts.netloc}"}
    offer = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=offer, headers=headers) as resp:
            status, answer = resp.status, await resp.json()
    result = {"status": status, "answer": answer if status != 200 else None}
    if status == 200:
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        result["input"] = answer["input"]
        track = await asyncio.wait_for(tracks.get(), TIMEOUT)
        colours = []
        while len(colours) < want:
            frame = await asyncio.wait_for(track.recv(), TIMEOUT)
            rgb = frame.to_ndarray(format="rgb24")
            height, width = rgb.shape[:2]
            colours.append([int(v) for v in rgb[height // 2, width // 2]])
        result["colours"] = colours
        await asyncio.wait_for(opened.wait(), TIMEOUT)
        for state in (True, False):
            channel.send(json.dumps({"event_type": "key", "event": {"key": key, "state": state}}))
        if not answer["input"]:  # a read-only console says why it refused
            for _ in range(int(TIMEOUT * 10)):
                if len(replies) >= 2:
                    break
                await asyncio.sleep(0.1)
        result["replies"] = replies
        result["state"] = pc.connectionState
    print(json.dumps(result), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await pc.close()
    print(json.dumps({"closed": True}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
