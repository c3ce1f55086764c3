"""AVR (Agent Voice Response) connectors as trivox providers.

trivox is the client of AVR's de-facto protocols, in AVR Core's place, so any AVR
connector plugs in: an STS connector over its WebSocket (``sts.AvrSts``), and ASR, LLM
and TTS services over their HTTP streams (``http.AvrAsr``, ``http.AvrLlm``,
``http.AvrTts``). ``protocol`` holds the message shapes, sans-IO, and says which AVR
repository defines each.
"""
