// remark settings for .ci/check-links.sh: only remark-validate-links, which
// checks that every relative link points at an existing file and every
// #anchor at an existing heading (in the same or the linked Markdown file).
// Offline: `repository: false` skips the Git-host URL checks, and the root is
// this checkout (two folders up), whether or not .git is a directory.
import {fileURLToPath} from 'node:url'
import remarkValidateLinks from 'remark-validate-links'

export default {
  plugins: [
    [
      remarkValidateLinks,
      {repository: false, root: fileURLToPath(new URL('../..', import.meta.url))}
    ]
  ]
}
