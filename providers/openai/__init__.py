"""OpenAI providers: chat completions (LLM), speech (TTS), transcription (ASR) and the
Realtime API (STS), against api.openai.com or any OpenAI-compatible base URL.

Installed with the ``openai`` extra (``pip install 'trivox[openai]'``); nothing here is
imported unless the configuration names an OpenAI provider.
"""
