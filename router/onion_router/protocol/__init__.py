"""Client protocols, pure. Each dialect parses its requests into one ChatRequest and shapes
answers, stream events and errors back into its own form.

- `types`: what every dialect shares (the request, answers and chunks, who answered);
- `chat`, `completions`, `tgi`: the dialects (OpenAI chat, OpenAI completions, TGI);
- `dialect`: what a dialect provides, as the routes use it;
- `body`: checks of request-body fields that the dialects share;
- `calls`: tool calls joined from stream pieces, and the router's own taken out;
- `sse`: server-sent event framing and the router's heartbeats;
- `errors`: ProtocolError and the OpenAI and TGI error bodies.
"""
