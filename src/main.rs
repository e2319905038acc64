fn main() {
    println!("felhom-agent: not yet");
}
