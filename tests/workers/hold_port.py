"""A 2-process gloo job that holds its rendezvous port for a while (tests of concurrent runs)."""

import os
import sys
import time

import torch
from accelerate import Accelerator

acc = Accelerator(cpu=True)
total = acc.reduce(torch.ones(1) * (acc.process_index + 1), reduction="sum")
time.sleep(float(sys.argv[1]))
acc.wait_for_everyone()
port = os.environ["MASTER_PORT"]
acc.print(f"LAUNCH_OK world={acc.num_processes} sum={int(total.item())} port={port}")
