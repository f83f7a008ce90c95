// The openai Node SDK's Responses streaming example, unchanged but for baseURL and one header:
//   node openai_responses.js <mnemo base URL> <user id> <message>
// Prints {"types": [...], "pieces": [...]}: every event's type, and the text deltas in order.
import OpenAI from "openai";

const [baseURL, userId, input] = process.argv.slice(2);

const client = new OpenAI({
  baseURL, // was https://api.openai.com/v1
  apiKey: "sk-client",
  defaultHeaders: { "X-Mnemo-User-Id": userId },
});

const stream = await client.responses.create({ model: "gpt-4o-mini", input, stream: true });
const types = [];
const pieces = [];
for await (const event of stream) {
  types.push(event.type);
  if (event.type === "response.output_text.delta") pieces.push(event.delta);
}
console.log(JSON.stringify({ types, pieces }));
