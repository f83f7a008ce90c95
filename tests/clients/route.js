// A Next.js App Router route (app/api/chat/route.js) that streams a reply with the Vercel AI
// SDK, as its docs show it; only the provider's baseURL and headers point it at Mnemo.
import { createOpenAI } from "@ai-sdk/openai";
import { streamText } from "ai";

export async function POST(req) {
  const { prompt, userId } = await req.json();
  const openai = createOpenAI({
    baseURL: process.env.MNEMO_BASE_URL, // was https://api.openai.com/v1
    apiKey: "sk-client",
    headers: { "X-Mnemo-User-Id": userId },
  });
  // .chat(): Chat Completions; the provider's default, openai(model), calls the Responses API.
  const result = streamText({ model: openai.chat("gpt-4o-mini"), prompt });
  return result.toTextStreamResponse();
}
