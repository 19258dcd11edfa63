# Sourced by the device scripts (gpu_check.sh, gpu_study_check.sh): one step of a device
# call under its own timeout, its log written as it goes, a line per step in steps.txt.
# Needs $out, the folder the logs go to.
step() {  # step NAME SECONDS COMMAND...: run it under its timeout, log to $out/NAME.log
  local name=$1 seconds=$2
  shift 2
  local started=$SECONDS
  timeout "$seconds" "$@" > "$out/$name.log" 2>&1
  echo "$name: exit $? in $((SECONDS - started)) s" | tee -a "$out/steps.txt"
}
