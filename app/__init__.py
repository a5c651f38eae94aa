"""The composition root: the `duplex` command, which builds the real models
(`stack.SpeechStack`) and wires sessions for `run`, `chat`, `serve` and `bench`.

The only package that imports all the others; none of them imports it at run
time. The server, the local assistant and the benchmark receive what they drive
(a stack, a session factory) from here.
"""
