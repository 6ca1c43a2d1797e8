"""The fake Asterisk AMI server as a process, for checks of an installed package (scripts/test-deb).

Usage: python -m tests.fakes.run_ami_server PORT SECRET DIALPLAN_FILE
Serves the calltrack manager user with the rights of config/samples/asterisk/manager_calltrack.conf
plus ``call`` (recordings pause), the dialplan read from DIALPLAN_FILE (plus a from-pstn context that
includes calltrack-inbound), no call traffic, until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from tests.fakes.ami_server import FakeAmiServer, Plan, Rights, dialplan_of


async def main(port: int, secret: str, dialplan: Path) -> None:
    extensions, includes = dialplan_of(dialplan.read_text())
    rights = Rights(
        write=frozenset({"reporting", "call"}),
        extensions=extensions,
        includes=(("from-pstn", "calltrack-inbound"), *includes),
    )
    server = FakeAmiServer([Plan()], username="calltrack", secret=secret, port=port, rights=rights)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"fake AMI server on 127.0.0.1:{server.port}", flush=True)
    await stop.wait()
    await server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])))
