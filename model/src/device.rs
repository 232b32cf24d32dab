//! Choosing the compute device (and so the backend) at run time from `--device`.

use burn::prelude::*;
use burn::tensor::DeviceKind;

/// The `--device` choices of `train` and `infer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A GPU through WGPU when one is present, otherwise `flex` (with a warning).
    Auto,
    /// Burn's pure-Rust CPU backend (fastest on CPU here).
    Flex,
    /// The deprecated ndarray CPU backend, kept for comparison.
    Ndarray,
    /// WGPU: Vulkan, Metal or DX12 on a GPU, or a software Vulkan driver.
    Wgpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "flex" => Ok(Self::Flex),
            "ndarray" => Ok(Self::Ndarray),
            "wgpu" => Ok(Self::Wgpu),
            _ => Err(format!(
                "unknown device {s:?}: expected auto, flex, ndarray or wgpu"
            )),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
        })
    }
}

/// A device that was checked to work, with the backend name that runs it.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    pub device: Device,
    pub backend: DeviceChoice,
    /// A note for the log, e.g. why `auto` fell back to the CPU.
    pub note: Option<String>,
}

/// Runs a tiny computation on `device`; WGPU panics when no adapter exists, so catch that.
fn probe(device: &Device) -> Result<(), String> {
    let device = device.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(move || {
        let t = Tensor::<1>::from_floats([1.0, 2.0], &device);
        t.sum().into_scalar::<f32>()
    });
    std::panic::set_hook(previous);
    match result {
        Ok(v) if (v - 3.0).abs() < 1e-6 => Ok(()),
        Ok(v) => Err(format!("a test sum gave {v} instead of 3")),
        Err(payload) => Err(payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the backend panicked".into())),
    }
}

/// Resolves a `--device` choice into a working device.
pub fn select_device(choice: DeviceChoice) -> Result<SelectedDevice, String> {
    match choice {
        DeviceChoice::Flex => Ok(SelectedDevice {
            device: Device::flex(),
            backend: choice,
            note: None,
        }),
        DeviceChoice::Ndarray => {
            #[allow(deprecated)] // kept as a comparison backend; flex is the default
            let device = Device::ndarray();
            Ok(SelectedDevice {
                device,
                backend: choice,
                note: None,
            })
        }
        DeviceChoice::Wgpu => {
            let device = Device::wgpu(DeviceKind::DefaultDevice);
            probe(&device).map_err(|e| {
                format!(
                    "--device wgpu: no usable WGPU adapter ({e}). Install a GPU driver with Vulkan support, \
                     or Mesa's software driver (`apt-get install mesa-vulkan-drivers`), or use --device flex"
                )
            })?;
            Ok(SelectedDevice {
                device,
                backend: choice,
                note: None,
            })
        }
        DeviceChoice::Auto => {
            // On Linux a GPU shows up as a device node; without one, skip initialising WGPU at all
            // (its software fallback is slower than flex, and the probe is noisy).
            let may_have_gpu = !cfg!(target_os = "linux")
                || std::path::Path::new("/dev/dri").exists()
                || std::path::Path::new("/dev/nvidia0").exists();
            let has_gpu = may_have_gpu
                && std::panic::catch_unwind(|| !Device::enumerate_physical().is_empty())
                    .unwrap_or(false);
            if has_gpu {
                let device = Device::wgpu(DeviceKind::DefaultDevice);
                if probe(&device).is_ok() {
                    return Ok(SelectedDevice {
                        device,
                        backend: DeviceChoice::Wgpu,
                        note: None,
                    });
                }
            }
            Ok(SelectedDevice {
                device: Device::flex(),
                backend: DeviceChoice::Flex,
                note: Some(
                    "--device auto: no GPU adapter found, using the flex CPU backend".into(),
                ),
            })
        }
    }
}

/// Serialises seeding and model initialisation: a backend's random generator is process-wide,
/// so two models initialised at once on different threads (tests, or a library user training
/// two businesses in parallel) would otherwise draw from each other's stream.
static SEEDED_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Seeds `device` and runs `init` while no other seeded initialisation runs, so the same seed
/// always gives the same initial weights.
pub fn seeded_init<T>(device: &Device, seed: u64, init: impl FnOnce() -> T) -> T {
    let _turn = SEEDED_INIT.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(seed);
    init()
}

/// Keeps freed tensor buffers in the process for reuse; call once at the start of a job.
///
/// glibc serves every allocation above its mmap threshold (128 KiB at start, raised only after
/// a larger block is freed, and never to the size being freed) with fresh pages and unmaps them
/// on free. A training step allocates and frees several same-sized buffers of a few MiB (the
/// gradients and Adam moments of an embedding table), so every step faulted its pages in anew:
/// measured in `benches/peers`, that doubled the recommender's training step (8.1 ms against
/// 4.0 ms once the threshold had been raised). A fixed threshold of 32 MiB (glibc's maximum) keeps
/// such buffers in the heap; the trim threshold keeps the heap from being handed back after every
/// step. Elsewhere (other C libraries) this does nothing.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before the job allocates
    // its tensors, and both values are within glibc's documented ranges.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Whether the device's tensors live in host memory (the CPU backends flex and ndarray, with or
/// without autodiff), so that reading a tensor back is a copy rather than a transfer. Burn 0.22
/// exposes the backend of a [`Device`] only through its `Debug` form (`Device<Flex(Cpu)>`); a
/// test pins that form.
pub fn memory_is_host(device: &Device) -> bool {
    let name = format!("{device:?}");
    name.contains("Flex(") || name.contains("NdArray(")
}

/// Whether `device` runs on a CubeCL backend (WGPU), where the forecaster's LSTM recurrence has
/// kernels (`fused_lstm::cube`). Autodiff or not: a device says its backend in its `Debug` form.
pub fn runs_cube_kernels(device: &Device) -> bool {
    format!("{device:?}").contains("Cube(")
}

/// The WGPU device for the tests of the GPU paths (Mesa's software Vulkan driver where there is
/// no GPU; CI installs it), checked to be recognised as a CubeCL device with and without autodiff.
#[cfg(test)]
pub(crate) fn wgpu_for_tests() -> Device {
    let device = select_device(DeviceChoice::Wgpu)
        .unwrap_or_else(|e| panic!("this test needs a WGPU adapter: {e}"))
        .device;
    assert!(runs_cube_kernels(&device), "{device:?}");
    assert!(runs_cube_kernels(&device.clone().autodiff()), "{device:?}");
    assert!(!memory_is_host(&device), "{device:?}");
    device
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_backends_are_recognised() {
        assert!(memory_is_host(&Device::flex()));
        assert!(memory_is_host(&Device::flex().autodiff()));
        #[allow(deprecated)]
        let ndarray = Device::ndarray();
        assert!(memory_is_host(&ndarray));
        assert!(!runs_cube_kernels(&Device::flex()));
        assert!(!runs_cube_kernels(&Device::flex().autodiff()));
        assert!(!runs_cube_kernels(&ndarray));
    }
}
