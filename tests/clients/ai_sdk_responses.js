// The Vercel AI SDK with its default OpenAI provider, openai("model"), which calls the Responses
// API; only the provider's baseURL and headers point it at Mnemo:
//   MNEMO_BASE_URL=<mnemo base URL> node ai_sdk_responses.js <stream|generate> <user id> <message>
// Prints {"pieces": [...]}: each text piece as it arrived (one piece for generateText).
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";

const [mode, userId, prompt] = process.argv.slice(2);
const openai = createOpenAI({
  baseURL: process.env.MNEMO_BASE_URL, // was https://api.openai.com/v1
  apiKey: "sk-client",
  headers: { "X-Mnemo-User-Id": userId },
});

const pieces = [];
if (mode === "stream") {
  const result = streamText({ model: openai("gpt-4o-mini"), prompt });
  for await (const piece of result.textStream) pieces.push(piece);
} else {
  const { text } = await generateText({ model: openai("gpt-4o-mini"), prompt });
  pieces.push(text);
}
console.log(JSON.stringify({ pieces }));
