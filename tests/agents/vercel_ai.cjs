// The Vercel AI SDK's default provider, `openai(...)` from @ai-sdk/openai (the Responses API),
// pointed at relaygate with OPENAI_BASE_URL and OPENAI_API_KEY: generateText, streamText, and a
// tool call with its result sent back. Prints one JSON line of what it got.
// Run: NODE_PATH=.tools/node_modules OPENAI_BASE_URL=http://127.0.0.1:8080/v1 \
//      OPENAI_API_KEY=rg-... RELAYGATE_MODEL=gpt-5.2 node tests/agents/vercel_ai.cjs
const { openai } = require("@ai-sdk/openai");
const { generateText, streamText, tool, jsonSchema, stepCountIs } = require("ai");

async function main() {
  const model = openai(process.env.RELAYGATE_MODEL);
  const plain = await generateText({ model, prompt: "Say hello" });
  const stream = streamText({ model, prompt: "Stream hello" });
  let streamed = "";
  for await (const text of stream.textStream) streamed += text;
  const weather = tool({
    description: "The weather in a city",
    inputSchema: jsonSchema({
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
    }),
    execute: async ({ city }) => `sunny in ${city}`,
  });
  const withTool = await generateText({
    model,
    prompt: "Weather in Paris?",
    tools: { weather },
    stopWhen: stepCountIs(2),
  });
  console.log(JSON.stringify({
    text: plain.text,
    usage: plain.usage,
    streamed,
    streamUsage: await stream.usage,
    toolText: withTool.text,
    steps: withTool.steps.length,
    toolResults: withTool.steps.flatMap((s) => s.toolResults.map((r) => r.output)),
  }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
