# A coding agent in a few lines of shell, for the `command` scaffold's tests: it asks the model
# (through the gateway, OpenAI protocol) for one shell command at a time, runs it, sends back the
# output, and stops when the model answers with no command. `submit` ends the iteration.
set -u
json() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }
messages="[{\"role\": \"user\", \"content\": $(json "$(cat "$STAIRCASE_PROMPT_FILE")")}]"
for step in $(seq 1 20); do
  body="{\"model\": \"$STAIRCASE_MODEL\", \"messages\": $messages}"
  answer=$(curl -sS -f -X POST "$OPENAI_BASE_URL/chat/completions" -H "authorization: Bearer $OPENAI_API_KEY" \
           -H 'content-type: application/json' --data-binary "$body") || { echo "the gateway refused step $step" >&2; exit 2; }
  command=$(printf '%s' "$answer" | python3 -c 'import json, sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"] or "")')
  [ -z "$command" ] && exit 0
  output=$(bash -c "$command" 2>&1)
  case "$output" in COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT*) exit 0 ;; esac  # submit said the iteration is over
  messages=$(python3 -c 'import json, sys; m = json.loads(sys.argv[1]); m += [{"role": "assistant", "content": sys.argv[2]}, {"role": "user", "content": sys.argv[3]}]; print(json.dumps(m))' "$messages" "$command" "$output")
done
