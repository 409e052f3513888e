"""The Binance USD-M adapter: REST and ws-fapi client, request signing, the jitted order wire format, SHA-256,
symbol discovery."""
