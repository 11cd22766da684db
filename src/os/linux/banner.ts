/** What `linux_banner` ("Linux version 6.1.0-50-amd64 (builder) ...") says of the kernel. */
export interface BannerVersion {
  /** `uname -r`. */
  readonly release: string;
  /** From the release's leading "major.minor", when it has one. */
  readonly major: number | undefined;
  readonly minor: number | undefined;
}

const BANNER = /^Linux version (\S+)/;
const MAJOR_MINOR = /^(\d+)\.(\d+)/;

/** The release and version in a banner; undefined when `text` is not a Linux banner. */
export function parseBanner(text: string): BannerVersion | undefined {
  const release = BANNER.exec(text)?.[1];
  if (release === undefined) return undefined;
  const m = MAJOR_MINOR.exec(release);
  return { release, major: m ? Number(m[1]) : undefined, minor: m ? Number(m[2]) : undefined };
}
