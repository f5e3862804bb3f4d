# shellcheck shell=sh
# `directory`. Inputs: HACTL_PATH; HACTL_STATE (present|absent), HACTL_OWNER, HACTL_GROUP,
# HACTL_MODE (apply).

hactl_probe() {
  hactl_probe_path
}

hactl_apply() {
  if [ "$HACTL_STATE" = absent ]; then
    rm -rf "$HACTL_PATH"
    return
  fi
  # The directory exists once mkdir ran, so hactl_set_attrs keeps what is not given.
  mkdir -p "$HACTL_PATH" || return 1
  hactl_set_attrs "$HACTL_PATH" "$HACTL_PATH" 0755
}
