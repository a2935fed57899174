"""Request and response shapes the gateway must read or write (OpenAI API), and SSE framing."""
