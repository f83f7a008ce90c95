// The Anthropic TypeScript SDK's messages.create and messages.stream examples, unchanged but for
// baseURL (the host root, as for api.anthropic.com) and one header:
//   node anthropic_messages.js <create|stream> <mnemo URL> <user id> <message>
// Prints {"pieces": [...], "stop_reason": ...}: the text as it arrived (one piece for create).
import Anthropic from "@anthropic-ai/sdk";

const [mode, baseURL, userId, content] = process.argv.slice(2);

const client = new Anthropic({
  baseURL, // was https://api.anthropic.com
  apiKey: "sk-ant-client",
  defaultHeaders: { "X-Mnemo-User-Id": userId },
});
const request = { model: "claude-test", max_tokens: 256, messages: [{ role: "user", content }] };

const pieces = [];
let message;
if (mode === "stream") {
  const stream = client.messages.stream(request);
  stream.on("text", (text) => pieces.push(text));
  message = await stream.finalMessage();
} else {
  message = await client.messages.create(request);
  pieces.push(message.content[0].text);
}
console.log(JSON.stringify({ pieces, stop_reason: message.stop_reason }));
