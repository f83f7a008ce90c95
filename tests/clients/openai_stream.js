// The openai Node SDK's streaming example, unchanged but for baseURL and one header:
//   node openai_stream.js <mnemo base URL> <user id> <message>
// Prints {"pieces": [...]}: the content of every streamed chunk, in order.
import OpenAI from "openai";

const [baseURL, userId, content] = process.argv.slice(2);

const client = new OpenAI({
  baseURL, // was https://api.openai.com/v1
  apiKey: "sk-client",
  defaultHeaders: { "X-Mnemo-User-Id": userId },
});

const stream = await client.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content }],
  stream: true,
});
const pieces = [];
for await (const chunk of stream) {
  pieces.push(chunk.choices[0]?.delta?.content || "");
}
console.log(JSON.stringify({ pieces }));
