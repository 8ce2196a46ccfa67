"""Viewers that only watch: `python -m bench.passive_viewers URL...`.

Opens a viewer on each stream URL (a stream URL opens one connection), prints
"ready" once each has sent its first update request, reads every update until
stdin closes, then disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from bench.viewer import keep_reading, open_viewer


async def main(urls: list[str]) -> None:
    async with contextlib.AsyncExitStack() as stack:
        readers = []
        for url in urls:
            viewer = await stack.enter_async_context(open_viewer(url, full=False))
            readers.append(asyncio.create_task(keep_reading(viewer)))
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
