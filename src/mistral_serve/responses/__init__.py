"""The Responses API and conversations (OpenAI's and Mistral's), built on chat: translation to
and from chat completions, the stored chains (through store/), background runs."""
